-- End-to-end latency: from intake accepting a job to the job being published, over every job
-- published since {since_ms}: the 50th, 95th and 99th percentiles (ms, exact) and the longest.
SELECT count() AS published,
       quantilesExact(0.5, 0.95, 0.99)(ms)[1] AS p50_ms,
       quantilesExact(0.5, 0.95, 0.99)(ms)[2] AS p95_ms,
       quantilesExact(0.5, 0.95, 0.99)(ms)[3] AS p99_ms,
       max(ms) AS max_ms
FROM (
    SELECT job_id, dateDiff('millisecond', min(submitted_at), max(at)) AS ms
    FROM {database:Identifier}.pipeline_events FINAL
    WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
      AND state = 'published'
      AND submitted_at IS NOT NULL
    GROUP BY job_id
)
