-- Time per stage: how many events each stage recorded, the handler time they add up to, and the
-- 95th percentile of one handler's time (ms).
SELECT stage,
       count() AS events,
       sum(duration_ms) AS total_ms,
       quantile(0.95)(duration_ms) AS p95_ms
FROM {database:Identifier}.pipeline_events FINAL
WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
GROUP BY stage
ORDER BY stage
