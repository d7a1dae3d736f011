-- Time per stage: how many events each stage recorded, the handler time they add up to, the
-- 50th, 95th and 99th percentiles of one handler's time (ms, exact: the value at that rank), and
-- how many of its events were failures, retries and dead letters.
SELECT stage,
       count() AS events,
       sum(duration_ms) AS total_ms,
       quantilesExact(0.5, 0.95, 0.99)(duration_ms)[1] AS p50_ms,
       quantilesExact(0.5, 0.95, 0.99)(duration_ms)[2] AS p95_ms,
       quantilesExact(0.5, 0.95, 0.99)(duration_ms)[3] AS p99_ms,
       countIf(state = 'failed') AS failed,
       countIf(state = 'retry') AS retries,
       countIf(state = 'dead_lettered') AS dead_letters
FROM {database:Identifier}.pipeline_events FINAL
WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND state NOT IN {ledger:Array(String)}  -- credit settlements: the account's, not the stage's work
GROUP BY stage
ORDER BY stage
