-- A realistic request mix for wrk (bench/load.py runs it): landing page, collections, item pages with bbox,
-- CQL2 filter and paging, single features, and a small synchronous process execution.
-- Arguments after "--": a file with a process execution body, then feature ids of the villages collection.
local ids, body = {}, nil
local mix = {}

function init(args)
  local f = io.open(args[1], "r")
  body = f:read("*a")
  f:close()
  for i = 2, #args do ids[#ids + 1] = args[i] end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  local function add(weight, fn) for _ = 1, weight do mix[#mix + 1] = fn end end
  local function get(path) return function() return wrk.format("GET", path) end end
  -- weights: reads dominate, as from portals and QGIS; about one request in 280 runs an analysis
  add(12, get("/"))
  add(24, get("/collections"))
  add(12, get("/collections/villages"))
  add(42, get("/collections/villages/items?limit=50"))
  add(42, get("/collections/villages/items?bbox=123.5,42.0,124.2,42.6&limit=100"))
  add(30, get("/collections/projects/items?filter=status%3D%27completed%27&limit=20"))
  add(24, get("/collections/admin-units/items?limit=20&offset=40&skipGeometry=true"))
  add(24, get("/collections/village-poverty/items?limit=20&sortby=-poverty_rate"))
  add(72, function()
    return wrk.format("GET", "/collections/villages/items/" .. ids[math.random(#ids)])
  end)
  add(1, function()
    return wrk.format("POST", "/processes/spatial-autocorrelation/execution",
                      {["Content-Type"] = "application/json"}, body)
  end)
end

function request()
  return mix[math.random(#mix)]()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.connect, e.read, e.write, e.status, e.timeout))
end
