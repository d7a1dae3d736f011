-- Time per stage and job group: stage_time.sql's handler-time figures for each stage, one row per
-- stage and {by} ('model', 'backend', 'template' or 'campaign': the job's, from job_latest), so a
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
LEFT JOIN (
    -- one value a job: the join's table holds a million short rows, not five columns of them
    SELECT job_id,
           multiIf({by:String} = 'model', model,
                   {by:String} = 'backend', backend,
                   {by:String} = 'template', template,
                   {by:String} = 'campaign', campaign,
                   '') AS group_key
    FROM {database:Identifier}.job_latest
) AS j ON e.job_id = j.job_id
WHERE e.at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND e.state NOT IN {ledger:Array(String)}  -- credit settlements: the account's, not the stage's work
GROUP BY stage, group_key
ORDER BY stage, group_key
