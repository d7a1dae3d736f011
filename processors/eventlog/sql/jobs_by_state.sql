-- Jobs by state: how many jobs are in each lifecycle state now.
-- A job's state is "published" if it ever was (work redone after it never moves it back:
-- processors/job_states.py FINAL), else its latest lifecycle event (by time, then by lifecycle
-- order). Markers such as retry are not states. {lifecycle} is the lifecycle in order
-- (processors/job_states.py: LIFECYCLE).
SELECT current AS state, count() AS jobs
FROM (
    SELECT job_id,
           argMax(state, tuple(state = 'published', at, indexOf({lifecycle:Array(String)}, state)))
               AS current
    FROM {database:Identifier}.pipeline_events FINAL
    WHERE at >= fromUnixTimestamp64Milli({since_ms:Int64})
      AND has({lifecycle:Array(String)}, state)
    GROUP BY job_id
)
GROUP BY state
ORDER BY state
