-- Time per stage and job group: stage_time.sql's handler-time figures for each stage, one row per
-- stage and {by} ('model', 'backend', 'template' or 'campaign': the job's, from job_groups), so a
-- slow stage can be told apart by what the job was routed to. Events of jobs with no such value
-- count under ''.
SELECT e.stage AS stage,
       j.group_key AS group_key,
       count() AS events,
       sum(e.duration_ms) AS total_ms,
       quantilesExact(0.5, 0.95, 0.99)(e.duration_ms)[1] AS p50_ms,
       quantilesExact(0.5, 0.95, 0.99)(e.duration_ms)[2] AS p95_ms,
       quantilesExact(0.5, 0.95, 0.99)(e.duration_ms)[3] AS p99_ms
FROM {database:Identifier}.pipeline_events AS e FINAL
-- Ten million events meet a million jobs here, so the join's key is a 64-bit hash of the job id,
-- not the id: a hash table of numbers is cheaper to build and probe than one of strings. Two job
-- ids would have to share a hash (odds of about 1 in 30 million over a million jobs) for their events
-- to be counted twice. (LEFT ANY JOIN, which would rule that out, cost about a fifth more engine CPU.)
LEFT JOIN (
    SELECT xxh3(job_id) AS job_key, group_key
    FROM {database:Identifier}.job_groups
    WHERE grouping = {by:String}
) AS j ON xxh3(e.job_id) = j.job_key
WHERE e.at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND e.state NOT IN {ledger:Array(String)}  -- credit settlements: the account's, not the stage's work
GROUP BY stage, group_key
ORDER BY stage, group_key
