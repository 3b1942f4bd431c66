// The sale page: live stock, a countdown to the opening, and one "Buy ticket"
// button that talks to the JSON API of flashsale-server.
//
// A sale with a draw window (docs/FAIRNESS.md) gives its first tickets by a
// draw among everyone who asks during the window, so the page says so before
// the opening, turns the button into "Enter the draw" during the window, and
// shows the result the moment the draw is published, without a reload. What
// it shows an entrant comes from the server (the reserve answer, then /me),
// never from the page's own memory: a reload shows the same thing.
//
// Plain browser JavaScript, no build step and nothing fetched from elsewhere.
// Every piece of server data reaches the page through textContent, never as
// HTML.
(function () {
  'use strict';

  /** Attempts after a `busy` answer before giving up and letting the user press again. */
  var BUSY_RETRIES = 5;
  /** Longest wait honoured from a Retry-After header, in ms. */
  var MAX_RETRY_AFTER_MS = 30000;
  /** Polling period while the event stream is down, in ms. */
  var POLL_MS = 3000;
  /** Below this share of the capacity left, the stock is shown as running low. */
  var LOW_STOCK = 0.1;
  /** Asks of /me for a draw's result, if the first finds it not yet drawn or fails. */
  var RESULT_TRIES = 4;
  /** Pause between those asks, in ms. */
  var RESULT_RETRY_MS = 1000;

  var DEMO_USER_KEY = 'flashsale.demo-user';
  var TOKEN_KEY = 'flashsale.token';

  var el = {};
  [
    'sale-name', 'sale-meta', 'state-pill', 'countdown', 'countdown-label', 'opens-at',
    'remaining', 'capacity-of', 'hurry', 'progress', 'progress-fill', 'sold-line',
    'buy', 'buy-label', 'outcome', 'ticket', 'ticket-sale', 'ticket-number', 'user',
    'connection', 'confetti', 'hold', 'hold-countdown', 'pay', 'cancel',
    'draw-line', 'draw-proof', 'draw-commitment', 'draw-published', 'draw-link',
    'draw-verify-commitment'
  ].forEach(function (id) { el[id] = document.getElementById(id); });

  var page = {
    sale: null,         // sale id
    title: '',          // sale id made human
    demo: false,
    status: null,       // {capacity, remaining, sold, state, opens_at, draw?}
    token: null,
    demoUser: null,
    signedOut: false,   // no token outside demo mode, or it expired
    ticket: null,       // the ticket this user holds, once known
    holdUntil: null,    // in a sale with holds: the payment deadline (ms), while unpaid
    confirmed: false,   // in a sale with holds: the ticket is paid
    lostHold: false,    // this user's hold ran out or was given up: they were told, and why
    inFlight: false,
    notOpenUntil: 0,    // after a not_open answer, the button waits until then (ms)
    loadFailed: false,
    // A sale with a draw: the status's `draw` is {commitment, draws_at, entrants, seed}.
    commitment: null,   // the commitment as first seen, before any seed
    entered: false,     // the server said this user is an entrant
    drawLost: false,    // the draw was made and passed this user over
    resultAsked: false  // /me was asked for the result after the seed was published
  };

  // ---------- small helpers ----------

  function humanize(id) {
    return id.split(/[-_\s]+/).filter(Boolean).map(function (w) {
      return w.charAt(0).toUpperCase() + w.slice(1);
    }).join(' ') || id;
  }

  function api(path) {
    return '/api/sales/' + encodeURIComponent(page.sale) + path;
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function pad(n) { return n < 10 ? '0' + n : String(n); }

  function plural(n, one, many) { return n === 1 ? one : many; }

  function formatCount(n) { return Number(n).toLocaleString(); }

  var clockFormat = new Intl.DateTimeFormat(undefined, {
    hour: '2-digit', minute: '2-digit', second: '2-digit'
  });

  /** A time of day to the second, in the visitor's time zone. */
  function clock(ms) { return clockFormat.format(new Date(ms)); }

  /** Retry-After as ms: delta-seconds or an HTTP date; `fallback` when absent. */
  function retryAfterMs(response, fallback) {
    var value = response.headers.get('Retry-After');
    var ms = fallback;
    if (value) {
      if (/^\d+$/.test(value.trim())) {
        ms = parseInt(value, 10) * 1000;
      } else {
        var date = Date.parse(value);
        if (!isNaN(date)) { ms = date - Date.now(); }
      }
    }
    return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
  }

  async function readJson(response) {
    try { return await response.json(); } catch (e) { return {}; }
  }

  function randomUser() {
    var a = new Uint32Array(1);
    crypto.getRandomValues(a);
    return (a[0] % 999999999) + 1;
  }

  // ---------- rendering ----------

  function isOpenNow() {
    var s = page.status;
    if (!s) { return false; }
    if (s.state === 'sold_out' || s.state === 'paused' || s.state === 'closed') { return false; }
    // Entries are closed and the result is on its way: nothing to press.
    if (drawPhase() === 'drawing') { return false; }
    if (Date.now() < page.notOpenUntil) { return false; }
    return s.state === 'open' || Date.now() >= s.opens_at;
  }

  function render() {
    var s = page.status;
    if (s) {
      var state = s.state === 'upcoming' && Date.now() >= s.opens_at ? 'open' : s.state;
      var pill = {
        upcoming: 'Coming soon', open: 'On sale now', sold_out: 'Sold out',
        paused: 'Paused', closed: 'Closed'
      }[state] || state;
      el['state-pill'].textContent = pill;
      el['state-pill'].className = 'pill pill-' + state.replace('_', '-');
      document.body.dataset.state = state;

      el.remaining.textContent = formatCount(s.remaining);
      el['capacity-of'].textContent = 'of ' + formatCount(s.capacity);
      var share = s.capacity > 0 ? s.sold / s.capacity : 0;
      el['progress-fill'].style.width = (share * 100).toFixed(2) + '%';
      el.progress.setAttribute('aria-valuemax', String(s.capacity));
      el.progress.setAttribute('aria-valuenow', String(s.sold));
      el.progress.setAttribute('aria-valuetext', formatCount(s.sold) + ' of ' + formatCount(s.capacity) + ' sold');
      el['sold-line'].textContent = formatCount(s.sold) + ' sold · ' + Math.round(share * 100) + '%';
      el.hurry.hidden = !(state === 'open' && s.remaining > 0 && s.remaining <= Math.max(1, s.capacity * LOW_STOCK));
    }

    var phase = drawPhase();
    var label = 'Buy ticket';
    if (page.inFlight) { label = phase === 'entries' ? 'Entering…' : 'Reserving…'; }
    else if (s && !page.token && !page.demo) { label = 'Sign in to buy'; }
    else if (s && s.state === 'sold_out' && page.ticket === null) { label = 'Sold out'; }
    else if (s && s.state === 'closed' && page.ticket === null) { label = 'Sale closed'; }
    else if (s && s.state === 'paused' && page.ticket === null) { label = 'Paused'; }
    else if (page.ticket !== null) { label = 'Check my ticket'; }
    else if (phase === 'drawing') { label = 'Drawing…'; }
    else if (s && !isOpenNow()) { label = 'Opens soon'; }
    else if (phase === 'entries') { label = page.entered ? 'In the draw' : 'Enter the draw'; }
    el['buy-label'].textContent = label;

    var enabled = !!s && !!page.token && !page.inFlight && isOpenNow();
    el.buy.disabled = !enabled;
    el.buy.setAttribute('aria-busy', page.inFlight ? 'true' : 'false');

    if (page.ticket !== null) {
      el.ticket.hidden = false;
      el['ticket-sale'].textContent = page.title;
      el['ticket-number'].textContent = '#' + page.ticket;
    } else {
      el.ticket.hidden = true;
    }
    el.hold.hidden = page.holdUntil === null;
    el.pay.hidden = !page.demo;
    renderDraw();
  }

  // ---------- a hold's payment window ----------

  var holdTimer = null;

  /** Takes the hold of a reserve or /me answer: held until `expires_at`, or confirmed. */
  function applyHold(body) {
    page.lostHold = false;
    page.ticket = body.ticket;
    page.confirmed = body.status === 'confirmed';
    page.holdUntil = body.status === 'held' || body.outcome === 'held' ? body.expires_at : null;
    holdTick();
  }

  function dropHold() {
    page.ticket = null;
    page.holdUntil = null;
    page.confirmed = false;
    clearTimeout(holdTimer);
  }

  function holdTick() {
    clearTimeout(holdTimer);
    if (page.holdUntil === null) { render(); return; }
    var left = page.holdUntil - Date.now();
    if (left <= 0) {
      dropHold();
      page.lostHold = true;
      say('warn', 'Your hold expired, and the ticket went back on sale.');
      render();
      return;
    }
    var total = Math.ceil(left / 1000);
    el['hold-countdown'].textContent = Math.floor(total / 60) + ':' + pad(total % 60);
    render();
    holdTimer = setTimeout(holdTick, left % 1000 || 1000);
  }

  async function cancelHold() {
    if (page.inFlight || page.holdUntil === null) { return; }
    page.inFlight = true;
    render();
    try {
      var r = await fetch(api('/cancel'), {
        method: 'POST', headers: { Authorization: 'Bearer ' + page.token }, cache: 'no-store'
      });
      var body = await readJson(r);
      if (body.outcome === 'released' || body.outcome === 'no_hold') {
        dropHold();
        // The stream's "back on sale" must not talk over this.
        page.lostHold = true;
        say('info', 'You gave the ticket up; it is back on sale.');
      } else {
        say('error', 'Something went wrong on our side. Please try again.');
      }
    } catch (e) {
      say('error', 'Connection problem. Please try again.');
    } finally {
      page.inFlight = false;
      render();
    }
  }

  async function payDemo() {
    if (page.inFlight || page.holdUntil === null) { return; }
    page.inFlight = true;
    render();
    try {
      var r = await fetch('/demo/pay', {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + page.token, 'Content-Type': 'application/json' },
        body: JSON.stringify({ sale: page.sale })
      });
      var body = await readJson(r);
      if (body.outcome === 'confirmed') {
        applyHold({ ticket: body.ticket, status: 'confirmed' });
        say('won', 'Paid! Ticket #' + body.ticket + ' is yours.');
        celebrate();
      } else if (body.outcome === 'expired') {
        dropHold();
        say('warn', 'Your hold expired before the payment, and the ticket went back on sale.');
      } else {
        say('error', 'The payment did not go through. Please try again.');
      }
    } catch (e) {
      say('error', 'Connection problem. Please try again.');
    } finally {
      page.inFlight = false;
      render();
    }
  }

  // ---------- a draw: entries, then the result ----------

  /**
   * Where a sale with a draw stands: 'before' the opening, 'entries' while
   * the window is open, 'drawing' from its close until the seed is seen,
   * 'drawn' once it is; null for a sale without a draw.
   */
  function drawPhase() {
    var d = page.status && page.status.draw;
    if (!d) { return null; }
    if (d.seed) { return 'drawn'; }
    var now = Date.now();
    if (now < page.status.opens_at) { return 'before'; }
    return now < d.draws_at ? 'entries' : 'drawing';
  }

  /** Remembers the commitment as first seen: the one to check the document against. */
  function noteCommitment() {
    var d = page.status && page.status.draw;
    if (d && page.commitment === null) { page.commitment = d.commitment; }
  }

  /** The hero's line about the draw, and the commitment and proof in the card. */
  function renderDraw() {
    var phase = drawPhase();
    el['draw-line'].hidden = phase === null;
    el['draw-proof'].hidden = phase === null;
    if (phase === null) { return; }
    var d = page.status.draw;
    var seconds = Math.round(Math.max(0, d.draws_at - page.status.opens_at) / 100) / 10;
    var entrants = formatCount(d.entrants) + ' ' + plural(d.entrants, 'entrant', 'entrants');
    el['draw-line'].textContent = {
      before: 'Entries open at ' + clock(page.status.opens_at) + '; arrive any time in the first ' +
        formatCount(seconds) + ' ' + plural(seconds, 'second', 'seconds') + ', order does not matter.',
      entries: 'Entries close at ' + clock(d.draws_at) +
        '; arrive any time before then, order does not matter. ' + entrants + ' so far.',
      drawing: 'Entries closed at ' + clock(d.draws_at) + '; the draw is being made.',
      drawn: 'Drawn at ' + clock(d.draws_at) + ' among ' + entrants + '.'
    }[phase];
    el['draw-commitment'].textContent = page.commitment;
    el['draw-verify-commitment'].textContent = page.commitment;
    el['draw-link'].href = api('/draw');
    el['draw-published'].hidden = phase !== 'drawn';
  }

  /**
   * Tells an entrant they are in, with the live count of the others. Not
   * once their result is asked for or known.
   */
  function sayEntered() {
    if (!page.entered || page.resultAsked || page.drawLost || page.ticket !== null) { return; }
    var d = page.status && page.status.draw;
    if (!d) { return; }
    var others = Math.max(0, d.entrants - 1);
    var text = 'You are in the draw with ' + formatCount(others) + ' ' + plural(others, 'other', 'others') +
      '; results at ' + clock(d.draws_at) + '. Pressing again changes nothing.';
    // Every event calls this: the live region speaks only when the count moved.
    if (el.outcome.textContent !== text) { say('entered', text); }
  }

  /** The server counts this user as an entrant (a 202 answer, or /me before the draw). */
  function enteredDraw(drawsAt) {
    page.entered = true;
    var d = page.status && page.status.draw;
    if (!d) {
      // No draw in the status read so far: say what the answer says.
      say('entered', 'You are in the draw; results at ' + clock(drawsAt) + '. Pressing again changes nothing.');
      return;
    }
    if (typeof drawsAt === 'number') { d.draws_at = drawsAt; }
    sayEntered();
    if (d.seed) { askResult(); }
  }

  function sayLost() {
    page.entered = true;
    page.drawLost = true;
    say('info', 'Not drawn this time.');
  }

  /**
   * Shows what a /me answer says this user has: a ticket (held or paid, in a
   * sale with holds), an entry in a draw still to come, or a draw that
   * passed them over. `drawn`: the answer is the draw's result, just
   * published, and a ticket is this user's win. False when the answer holds
   * none of these (or, for `drawn`, no result yet).
   */
  function showMine(body, drawn) {
    var kind = drawn ? 'won' : 'info';
    var lead = drawn ? 'You were drawn! ' : '';
    if (typeof body.ticket === 'number' && body.status) {
      applyHold(body);
      say(kind, lead + (body.status === 'held'
        ? 'Ticket #' + body.ticket + ' is held for you until you pay.'
        : 'Paid: ticket #' + body.ticket + ' is yours.'));
    } else if (typeof body.ticket === 'number') {
      page.ticket = body.ticket;
      say(kind, drawn ? lead + 'Ticket #' + body.ticket + ' is yours.'
        : 'This ticket is already yours: #' + body.ticket);
    } else if (body.draw && body.draw.result === 'lost') {
      sayLost();
      return true;
    } else if (body.draw && body.draw.result === 'pending' && !drawn) {
      enteredDraw(body.draw.draws_at);
      return true;
    } else {
      return false;
    }
    if (drawn) { celebrate(); }
    return true;
  }

  /**
   * Once the seed is published: asks /me what the draw gave this user. One
   * ask, unless it fails or its answer predates the draw.
   */
  async function askResult() {
    if (page.resultAsked || !page.entered || !page.token) { return; }
    page.resultAsked = true;
    say('pending', 'The draw is made. Looking up your result…');
    for (var attempt = 0; attempt < RESULT_TRIES; attempt++) {
      if (attempt > 0) { await sleep(RESULT_RETRY_MS); }
      try {
        var r = await fetch(api('/me'), {
          headers: { Authorization: 'Bearer ' + page.token }, cache: 'no-store'
        });
        if (r.status === 401 && !page.demo) {
          signedOut();
          say('warn', 'Your session expired. Please sign in again.');
          break;
        }
        if (r.ok && showMine(await readJson(r), true)) { render(); return; }
      } catch (e) { /* asked again below */ }
    }
    if (page.token) { say('warn', 'We could not fetch your result. Reload the page to see it.'); }
    render();
  }

  /** Shows a message in the live region; kind is won, info, warn, error, pending or entered. */
  function say(kind, text) {
    el.outcome.className = 'outcome outcome-' + kind;
    el.outcome.textContent = text;
  }

  function clearSay() {
    el.outcome.className = 'outcome';
    el.outcome.textContent = '';
  }

  // ---------- countdown ----------

  var countdownTimer = null;
  var openedOnce = false;

  function tick() {
    var s = page.status;
    if (!s) { return; }
    var opensLeft = s.opens_at - Date.now();
    // During a draw window the countdown runs on, to the close of entries.
    var closing = drawPhase() === 'entries' && s.state !== 'paused' && s.state !== 'closed' &&
      s.state !== 'sold_out';
    var left = closing ? s.draw.draws_at - Date.now() : opensLeft;
    var units = { d: 0, h: 0, m: 0, s: 0 };
    if (left > 0) {
      // Round up so the display reads 0:00:00 exactly at the opening.
      var total = Math.ceil(left / 1000);
      units.d = Math.floor(total / 86400);
      units.h = Math.floor(total / 3600) % 24;
      units.m = Math.floor(total / 60) % 60;
      units.s = total % 60;
    }
    var nums = el.countdown.querySelectorAll('.num');
    for (var i = 0; i < nums.length; i++) {
      var u = nums[i].dataset.unit;
      nums[i].textContent = u === 'd' ? String(units.d) : pad(units[u]);
    }
    var upcoming = opensLeft > 0 && s.state === 'upcoming';
    el['opens-at'].textContent = (opensLeft > 0 ? 'Opens ' : 'Opened ') + openingFormat.format(new Date(s.opens_at));
    document.body.classList.toggle('is-live', !upcoming && !closing);
    el['countdown-label'].textContent = upcoming ? 'Opens in'
      : closing ? 'Entries close in'
      : drawPhase() === 'drawing' ? 'The draw is being made'
      : s.state === 'sold_out' ? 'This sale is over'
        : s.state === 'closed' ? 'This sale has closed'
          : s.state === 'paused' ? 'The sale is paused' : 'The sale is open';
    el.countdown.setAttribute('aria-label', upcoming || closing
      ? el['countdown-label'].textContent + ' ' + units.d + ' ' + plural(units.d, 'day', 'days') + ', ' + units.h + ' h, ' + units.m + ' min, ' + units.s + ' s'
      : el['countdown-label'].textContent);

    if (opensLeft <= 0 && !openedOnce) {
      openedOnce = true;
      // The button is enabled by render() from this instant on; the status
      // is fetched again in case the server knows better (sold out already,
      // or a different opening time).
      refreshStatus();
    }
    render();

    clearTimeout(countdownTimer);
    if (left > 0) {
      // Wake exactly at the next whole second of the countdown.
      var next = left % 1000 || 1000;
      countdownTimer = setTimeout(tick, next + 5);
    }
  }

  var openingFormat = new Intl.DateTimeFormat(undefined, {
    weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit'
  });

  function restartCountdown() {
    openedOnce = page.status && Date.now() >= page.status.opens_at;
    tick();
  }

  // ---------- status: event stream, polling fallback ----------

  function applyStatus(update) {
    if (!page.status) { return; }
    var before = page.status.opens_at;
    var wasSoldOut = page.status.state === 'sold_out';
    if (wasSoldOut && update.state === 'open' && page.ticket === null && !page.lostHold) {
      say('info', 'Tickets are back on sale!');
    }
    ['capacity', 'remaining', 'sold', 'state', 'opens_at'].forEach(function (k) {
      if (update[k] !== undefined && update[k] !== null) { page.status[k] = update[k]; }
    });
    if (update.draw) {
      var wasDrawn = !!(page.status.draw && page.status.draw.seed);
      page.status.draw = update.draw;
      noteCommitment();
      sayEntered();
      // The seed is out: the result is known, ask for it.
      if (!wasDrawn && update.draw.seed) { askResult(); }
    }
    if (page.status.opens_at !== before) { restartCountdown(); } else { tick(); }
  }

  async function refreshStatus() {
    try {
      var r = await fetch(api(''), { cache: 'no-store' });
      if (r.ok) {
        applyStatus(await readJson(r));
        return true;
      }
    } catch (e) { /* the poller or the stream tries again */ }
    return false;
  }

  var pollTimer = null;
  function startPolling() {
    if (pollTimer) { return; }
    el.connection.textContent = 'Live updates paused; checking every few seconds.';
    pollTimer = setInterval(refreshStatus, POLL_MS);
  }
  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
    el.connection.textContent = '';
  }

  var stream = null;
  var streamBackoff = 1000;
  function connectStream() {
    if (typeof EventSource === 'undefined') { startPolling(); return; }
    stream = new EventSource(api('/events'));
    stream.onopen = function () {
      streamBackoff = 1000;
      stopPolling();
      // Anything missed while disconnected.
      refreshStatus();
    };
    stream.onmessage = function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      stopPolling();
      applyStatus(data);
    };
    stream.onerror = function () {
      // The browser reconnects by itself unless the stream is CLOSED (an
      // HTTP error, a wrong content type); either way, poll meanwhile.
      startPolling();
      if (stream.readyState === EventSource.CLOSED) {
        stream.close();
        setTimeout(connectStream, streamBackoff);
        streamBackoff = Math.min(streamBackoff * 2, 30000);
      }
    };
  }

  // ---------- identity ----------

  async function demoSignIn(user) {
    var r = await fetch('/demo/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: user })
    });
    if (!r.ok) { throw new Error('token ' + r.status); }
    var body = await readJson(r);
    page.token = body.token;
    page.demoUser = body.user;
    page.signedOut = false;
    localStorage.setItem(DEMO_USER_KEY, String(body.user));
    showUser();
  }

  /**
   * The token this origin's own login left in sessionStorage. Never one
   * from the URL: a link carrying a token would sign the visitor in as
   * whoever made the link (login CSRF).
   */
  function tokenFromPage() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** The `sub` of a JWT, for display only; the server checks the token. */
  function tokenSubject(token) {
    try {
      var part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      var claims = JSON.parse(atob(part));
      return claims.sub === undefined ? null : String(claims.sub);
    } catch (e) { return null; }
  }

  function showUser() {
    var u = el.user;
    u.textContent = '';
    if (page.demo && page.demoUser !== null) {
      u.appendChild(document.createTextNode('Signed in as demo user ' + page.demoUser + ' '));
      var again = document.createElement('button');
      again.type = 'button';
      again.className = 'linkish';
      again.textContent = 'new demo user';
      again.addEventListener('click', newDemoUser);
      u.appendChild(again);
    } else if (page.token && !page.signedOut) {
      var sub = tokenSubject(page.token);
      u.textContent = sub ? 'Signed in as ' + sub : 'Signed in';
    } else {
      u.textContent = 'Sign in to buy';
      u.classList.add('signed-out');
      return;
    }
    u.classList.remove('signed-out');
  }

  async function newDemoUser() {
    if (page.inFlight) { return; }
    dropHold();
    page.lostHold = false;
    page.entered = false;
    page.drawLost = false;
    page.resultAsked = false;
    clearSay();
    try {
      await demoSignIn(randomUser());
      await checkMine();
    } catch (e) {
      say('error', 'Connection problem. Please try again.');
    }
    render();
  }

  function signedOut() {
    page.token = null;
    page.signedOut = true;
    sessionStorage.removeItem(TOKEN_KEY);
    showUser();
  }

  // ---------- buying ----------

  async function checkMine() {
    if (!page.token) { return; }
    try {
      var r = await fetch(api('/me'), {
        headers: { Authorization: 'Bearer ' + page.token }, cache: 'no-store'
      });
      if (r.ok) {
        showMine(await readJson(r), false);
      } else if (r.status === 401 && !page.demo) {
        signedOut();
        say('warn', 'Your session expired. Please sign in again.');
      }
    } catch (e) { /* not knowing yet is fine: buying again says the same */ }
    render();
  }

  function celebrate() {
    if (window.matchMedia('(prefers-reduced-motion: reduce)').matches) { return; }
    var box = el.confetti;
    box.textContent = '';
    var colours = ['#d6245c', '#ffb703', '#3a86ff', '#2ec4b6', '#8338ec'];
    for (var i = 0; i < 60; i++) {
      var p = document.createElement('span');
      p.style.left = (Math.random() * 100) + 'vw';
      p.style.background = colours[i % colours.length];
      p.style.animationDelay = (Math.random() * 0.4) + 's';
      p.style.animationDuration = (1.6 + Math.random() * 1.4) + 's';
      p.style.transform = 'rotate(' + Math.floor(Math.random() * 360) + 'deg)';
      box.appendChild(p);
    }
    setTimeout(function () { box.textContent = ''; }, 3500);
  }

  async function buy() {
    if (page.inFlight || el.buy.disabled) { return; }
    page.inFlight = true;
    say('pending', drawPhase() === 'entries' ? 'Entering you in the draw…' : 'Reserving your ticket…');
    render();
    try {
      await reserve();
    } finally {
      page.inFlight = false;
      render();
    }
  }

  async function reserve() {
    var busyTries = 0;
    var renewed = false;
    for (;;) {
      var r;
      try {
        r = await fetch(api('/reserve'), {
          method: 'POST',
          headers: { Authorization: 'Bearer ' + page.token },
          cache: 'no-store'
        });
      } catch (e) {
        say('error', 'Connection problem. Please try again.');
        return;
      }
      var body = await readJson(r);
      var outcome = body.outcome;

      if (r.status === 401) {
        if (page.demo && !renewed) {
          renewed = true;
          try { await demoSignIn(page.demoUser); continue; } catch (e) { /* fall through */ }
        }
        if (!page.demo) { signedOut(); }
        say('warn', 'Your session expired. Please sign in again.');
        return;
      }
      if (outcome === 'entered') {
        enteredDraw(body.draws_at);
        return;
      }
      if (outcome === 'won') {
        page.ticket = body.ticket;
        say('won', 'You got ticket #' + body.ticket + '!');
        celebrate();
        return;
      }
      if (outcome === 'held') {
        applyHold(body);
        say('won', 'Ticket #' + body.ticket + ' is held for you. Pay before the time runs out.');
        celebrate();
        return;
      }
      if (outcome === 'already_owned' && body.status) {
        applyHold(body);
        say('info', body.status === 'held'
          ? 'Ticket #' + body.ticket + ' is already held for you.'
          : 'Paid: ticket #' + body.ticket + ' is yours.');
        return;
      }
      if (outcome === 'already_owned') {
        page.ticket = body.ticket;
        say('info', 'This ticket is already yours: #' + body.ticket);
        return;
      }
      if (outcome === 'paused') {
        if (page.status) { page.status.state = 'paused'; }
        say('info', 'The sale is paused. Please try again shortly.');
        refreshStatus();
        return;
      }
      if (outcome === 'closed') {
        if (page.status) { page.status.state = 'closed'; }
        say('info', 'This sale has closed.');
        refreshStatus();
        return;
      }
      if (outcome === 'sold_out') {
        if (page.status) { page.status.state = 'sold_out'; page.status.remaining = 0; }
        say('info', 'Sold out. Every ticket is gone.');
        refreshStatus();
        return;
      }
      if (outcome === 'not_open') {
        say('info', "The sale hasn't opened yet.");
        var wait = retryAfterMs(r, 1000);
        if (typeof body.opens_at === 'number' && page.status) {
          page.status.state = 'upcoming';
          applyStatus({ opens_at: body.opens_at });
        }
        // Our clock may run ahead of the server's: hold the button for the
        // time the server asked, then let the user press again.
        page.notOpenUntil = Date.now() + wait;
        setTimeout(render, wait + 10);
        return;
      }
      if (outcome === 'busy' && busyTries < BUSY_RETRIES) {
        busyTries += 1;
        say('warn', 'Lots of people are buying right now. Trying again…');
        var base = retryAfterMs(r, 1000);
        // Jitter spreads the retries of everyone told "busy" at once.
        await sleep(base + Math.random() * Math.max(base, 500));
        continue;
      }
      if (outcome === 'busy') {
        say('warn', 'Lots of people are buying right now. Please try again in a moment.');
        return;
      }
      if (outcome === 'unknown_sale') {
        say('error', "We couldn't find this sale.");
        return;
      }
      say('error', 'Something went wrong on our side. Please try again.');
      return;
    }
  }

  // ---------- start ----------

  async function load() {
    var config;
    try {
      var cr = await fetch('/api/config', { cache: 'no-store' });
      if (!cr.ok) { throw new Error('config ' + cr.status); }
      config = await readJson(cr);
    } catch (e) {
      say('error', 'Connection problem. Retrying…');
      setTimeout(load, 3000);
      return;
    }
    page.demo = !!config.demo;
    var wanted = new URLSearchParams(location.search).get('sale');
    page.sale = wanted || (config.sales && config.sales[0]) || 'default';
    page.title = humanize(page.sale);
    el['sale-name'].textContent = page.title;
    document.title = page.title + ' · Tickets · flashsale';

    try {
      var sr = await fetch(api(''), { cache: 'no-store' });
      if (sr.status === 404) {
        el['sale-meta'].textContent = 'There is no sale here.';
        el['state-pill'].textContent = 'Not found';
        document.body.classList.add('no-sale');
        say('error', "We couldn't find this sale.");
        el.user.textContent = '';
        return;
      }
      if (!sr.ok) { throw new Error('status ' + sr.status); }
      page.status = await readJson(sr);
      noteCommitment();
    } catch (e) {
      say('error', 'Connection problem. Retrying…');
      setTimeout(load, 3000);
      return;
    }
    clearSay();
    el['sale-meta'].textContent = formatCount(page.status.capacity) + ' ' +
      plural(page.status.capacity, 'ticket', 'tickets') + ' · one per person';
    restartCountdown();
    connectStream();

    if (page.demo) {
      var stored = parseInt(localStorage.getItem(DEMO_USER_KEY) || '', 10);
      try {
        await demoSignIn(stored > 0 ? stored : randomUser());
      } catch (e) {
        el.user.textContent = 'Could not sign in';
        say('error', 'Connection problem. Please try again.');
      }
    } else {
      page.token = tokenFromPage();
      showUser();
    }
    await checkMine();
  }

  el.buy.addEventListener('click', buy);
  el.cancel.addEventListener('click', cancelHold);
  el.pay.addEventListener('click', payDemo);
  document.addEventListener('visibilitychange', function () {
    // Timers are throttled in a hidden tab: catch up on return.
    if (!document.hidden && page.status) { refreshStatus(); tick(); }
  });
  load();
})();
