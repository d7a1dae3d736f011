-- End-to-end latency: from intake accepting a job to the job being published, over every job
-- published since {since_ms}.
SELECT count() AS published,
       quantile(0.5)(ms) AS p50_ms,
       quantile(0.95)(ms) AS p95_ms,
       max(ms) AS max_ms
FROM (
    SELECT job_id, dateDiff('millisecond', min(submitted_at), max(at)) AS ms
    FROM {database:Identifier}.pipeline_events FINAL
    WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
      AND state = 'published'
      AND submitted_at IS NOT NULL
    GROUP BY job_id
)
