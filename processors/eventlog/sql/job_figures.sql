-- Job figures: for the jobs with an event since {since_ms} (all their events counted), one row
-- per {by}: '' (all jobs together), 'model', 'backend', 'template' or 'campaign' (what the job
-- was last routed to or served by, its template id@version, its campaign). Read from the
-- latest-state-per-job view, job_latest (through job_groups, which adds the job's group), where
-- each per-job rule lives (docs/analytics.md):
-- the artifact rate three ways (the share of first-pass candidates the quality gate rejected;
-- of the jobs it scored, the share that needed a retry and the share that needed a person),
-- first-pass yield, retry and fallback rates, end-to-end p50/p95/p99 (ms, exact) of delivered
-- jobs, delivered images per minute over the span the jobs' events cover, and images per
-- GPU-hour (null without GPU time).
SELECT group_key,
       count() AS jobs,
       countIf(published) AS delivered,
       countIf(job_state = 'failed') AS failed_jobs,
       countIf(job_state = 'rejected') AS rejected_jobs,
       countIf(job_state = 'in_review') AS in_review_jobs,
       sum(first_candidates) AS candidates,
       sum(first_rejected_candidates) AS rejected_candidates,
       if(candidates = 0, 0, rejected_candidates / candidates) AS gate_rejection_rate,
       countIf(verdicts > 0) AS scored_jobs,
       countIf(verdicts > 0 AND quality_retried) AS quality_retry_jobs,
       if(scored_jobs = 0, 0, quality_retry_jobs / scored_jobs) AS needed_retry_rate,
       countIf(verdicts > 0 AND needed_person) AS person_jobs,
       if(scored_jobs = 0, 0, person_jobs / scored_jobs) AS needed_person_rate,
       countIf(first_scored) AS first_pass_scored,
       countIf(first_passed) AS first_pass,
       if(first_pass_scored = 0, 0, first_pass / first_pass_scored) AS first_pass_yield,
       countIf(retried) AS retry_jobs,
       if(jobs = 0, 0, retry_jobs / jobs) AS retry_rate,
       countIf(generations > 0) AS generated_jobs,
       countIf(fell_back) AS fallback_jobs,
       if(generated_jobs = 0, 0, fallback_jobs / generated_jobs) AS fallback_rate,
       if(delivered = 0, NULL, quantilesExactIf(0.5, 0.95, 0.99)(end_to_end_ms, published)[1]) AS e2e_p50_ms,
       if(delivered = 0, NULL, quantilesExactIf(0.5, 0.95, 0.99)(end_to_end_ms, published)[2]) AS e2e_p95_ms,
       if(delivered = 0, NULL, quantilesExactIf(0.5, 0.95, 0.99)(end_to_end_ms, published)[3]) AS e2e_p99_ms,
       sum(images_generated) AS generated_images,
       sum(gpu_seconds) AS gpu_s,
       sum(cpu_seconds) AS cpu_s,
       sum(api_calls) AS calls,
       greatest(dateDiff('millisecond',
                         greatest(min(first_at), fromUnixTimestamp64Milli({since_ms:Int64})),
                         max(last_at)), 1) / 1000 AS span_s,
       delivered / (span_s / 60) AS delivered_per_minute,
       if(gpu_s = 0, NULL, delivered / (gpu_s / 3600)) AS images_per_gpu_hour
FROM {database:Identifier}.job_groups  -- job_latest under the grouping asked for
-- any other {by} (as 'all' or a typo) is every job together, as in the other files
WHERE grouping = if({by:String} IN ('model', 'backend', 'template', 'campaign'), {by:String}, '')
  AND last_at >= fromUnixTimestamp64Milli({since_ms:Int64})
  AND job_state != ''
GROUP BY group_key
ORDER BY jobs DESC, group_key
