-- wrk script for bench/http.sh: every request is a reservation carrying the
-- next pre-minted token, so each one is a distinct signed-in user.
--
-- wrk runs this file once per thread, each in its own Lua state. The
-- tokens file (TOKENS, one a line) is read by every thread; thread i of n
-- (n = WRK_THREADS, wrk's -t) takes tokens i, i+n, i+2n, ... so no two
-- threads send the same one.
-- Past the end of the file a thread starts over, and each token is then
-- sent again (the server answers that user as it did before).

local path = os.getenv("SALE_PATH") or "/api/sales/bench/reserve"
local file = os.getenv("TOKENS") or error("set TOKENS to the tokens file")

local stride = tonumber(os.getenv("WRK_THREADS") or "2")
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  tokens = {}
  local n = 0
  for line in io.lines(file) do
    if n % stride == id then
      tokens[#tokens + 1] = line
    end
    n = n + 1
  end
  if #tokens == 0 then
    error("no tokens for this thread in " .. file)
  end
  next_token = 1
end

function request()
  local token = tokens[next_token]
  next_token = next_token + 1
  if next_token > #tokens then
    next_token = 1
  end
  return wrk.format("POST", path, { ["Authorization"] = "Bearer " .. token }, nil)
end
