-- POST a small chat completion, each request as the next of BENCH_KEYS_FILE's users
-- (a gateway key per line); targets without keys ignore the header. BENCH_HEADERS adds
-- "Name: value" lines to every request (Portkey's routing headers).
local keys = {}
local file = os.getenv("BENCH_KEYS_FILE")
if file then
  for line in io.lines(file) do keys[#keys + 1] = line end
end
local extra = {}
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then extra[name] = value end
end
local body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
local path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
local position = 0

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
  position = math.random(math.max(#keys, 1))
end

function request()
  local headers = { ["Content-Type"] = "application/json" }
  for name, value in pairs(extra) do headers[name] = value end
  if #keys > 0 then
    position = position % #keys + 1
    headers["Authorization"] = "Bearer " .. keys[position]
  end
  return wrk.format("POST", path, headers, body)
end
