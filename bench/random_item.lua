-- wrk: GET /items/<a random id of the 1,000,000> (make bench-scale).
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/items/" .. math.random(1, 1000000))
end
