//! What a run checked and what it found broken, by kind.
//!
//! Every kind of broken promise has its own counter, because they are not
//! equally bad and a replayed seed should show which one came back: a lost
//! ticket, a ticket sold twice, a paid ticket gone, a payment accepted after
//! its deadline. The checks that passed are counted too, so that a run that
//! checked nothing cannot pass for a clean one.

/// Problems quoted in full in the failure report; the rest are counted.
const QUOTED_PROBLEMS: usize = 20;

/// Violations found so far, by kind, with the first few described.
#[derive(Debug, Default)]
pub struct Tally {
    /// Acknowledged answers naming a ticket (`Won`, `AlreadyOwned`, `Held`,
    /// `AlreadyHeld`, `Confirmed`) verified after a restart.
    pub checked: u64,
    /// Acknowledged tickets or holds missing, or with another number or
    /// deadline, after a restart or in a later answer.
    pub lost: u64,
    /// More tickets than the capacity, or a ticket number outside it.
    pub oversold: u64,
    /// A ticket with two holders, a user with two tickets or two numbers,
    /// counters that disagree with the lookups.
    pub duplicates: u64,
    /// An acknowledged confirmation that is gone, or a confirmed ticket that
    /// is merely held again, or held by someone else.
    pub confirmed_lost: u64,
    /// A confirmation that succeeded after the hold's deadline, after an
    /// `Expired` answer, or after an acknowledged cancel or release.
    pub late_confirmed: u64,
    /// Any other broken promise (a sale answering `SoldOut` with tickets
    /// left, a hold past its deadline, a confirmation nobody asked for).
    pub other: u64,
    /// What the checks of sales with holds verified.
    pub holds: HoldChecks,
    /// The first violations, described.
    pub problems: Vec<String>,
}

/// What the checks of sales with holds verified, by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct HoldChecks {
    /// Acknowledged holds verified after a restart (still held with the
    /// same deadline, confirmed, or released as allowed).
    pub holds: u64,
    /// Acknowledged confirmations verified after a restart.
    pub confirms: u64,
    /// Acknowledged cancels verified after a restart.
    pub cancels: u64,
    /// Acknowledged operator releases verified after a restart.
    pub releases: u64,
    /// Holds found released after a restart once their deadline had passed,
    /// with no cancel or release sent: the sweep's or the startup's work.
    pub expiries: u64,
    /// Confirmations sent at or after the deadline and answered `Expired`.
    pub late_refused: u64,
}

impl HoldChecks {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: HoldChecks) {
        self.holds += other.holds;
        self.confirms += other.confirms;
        self.cancels += other.cancels;
        self.releases += other.releases;
        self.expiries += other.expiries;
        self.late_refused += other.late_refused;
    }
}

impl Tally {
    /// Whether any violation was found.
    pub fn failed(&self) -> bool {
        self.lost
            + self.oversold
            + self.duplicates
            + self.confirmed_lost
            + self.late_confirmed
            + self.other
            > 0
    }

    fn note(&mut self, problem: String) {
        if self.problems.len() < QUOTED_PROBLEMS {
            self.problems.push(problem);
        }
    }

    /// Records a broken promise of no other kind.
    pub fn other(&mut self, problem: String) {
        self.other += 1;
        self.note(problem);
    }

    /// Records an acknowledged ticket or hold that is gone.
    pub fn lost(&mut self, problem: String) {
        self.lost += 1;
        self.note(problem);
    }

    /// Records a ticket beyond the capacity.
    pub fn oversold(&mut self, problem: String) {
        self.oversold += 1;
        self.note(problem);
    }

    /// Records a ticket or a user counted twice.
    pub fn duplicate(&mut self, problem: String) {
        self.duplicates += 1;
        self.note(problem);
    }

    /// Records an acknowledged confirmation that is gone.
    pub fn confirmed_lost(&mut self, problem: String) {
        self.confirmed_lost += 1;
        self.note(problem);
    }

    /// Records a confirmation that should have been refused.
    pub fn late_confirmed(&mut self, problem: String) {
        self.late_confirmed += 1;
        self.note(problem);
    }
}
