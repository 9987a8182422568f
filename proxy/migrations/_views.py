"""The SQL view `user_summary`, as each migration leaves it: over `requests` until 0007, over
the per-user rollups (`user_totals`) since.

Until 0007, a migration that altered a column of `requests` failed while the view existed
(SQLite: "error in view user_summary"; PostgreSQL: "cannot alter type of a column used by a
view"): it dropped the view first and created it again after its own operations. The same
holds now for `user_totals`.
"""

DROP_USER_SUMMARY = "DROP VIEW IF EXISTS user_summary"

# As created by 0003, over `tokens_est`.
CREATE_USER_SUMMARY_0003 = """
CREATE VIEW user_summary AS
SELECT
    MIN(id) AS id,
    user_id,
    COUNT(*) AS requests,
    SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,
    SUM(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS rate_limited,
    SUM(tokens_est) AS tokens,
    CAST(AVG(latency_ms) AS DOUBLE PRECISION) AS avg_latency_ms,
    MIN(created_at) AS first_seen,
    MAX(created_at) AS last_seen
FROM requests
GROUP BY user_id
"""

# Since 0004: tokens of the calls whose usage is known, and how many calls have none.
CREATE_USER_SUMMARY = """
CREATE VIEW user_summary AS
SELECT
    MIN(id) AS id,
    user_id,
    COUNT(*) AS requests,
    SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,
    SUM(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS rate_limited,
    COALESCE(SUM(total_tokens), 0) AS tokens,
    SUM(CASE WHEN total_tokens IS NULL THEN 1 ELSE 0 END) AS unknown_usage,
    CAST(AVG(latency_ms) AS DOUBLE PRECISION) AS avg_latency_ms,
    MIN(created_at) AS first_seen,
    MAX(created_at) AS last_seen
FROM requests
GROUP BY user_id
"""

# Since 0007: over the per-user rollups (billing.UserTotal), not the log, so a summary page
# reads one row per user whatever the log's size, and summaries outlive pruned rows.
CREATE_USER_SUMMARY_OVER_ROLLUPS = """
CREATE VIEW user_summary AS
SELECT
    id,
    user_id,
    requests,
    errors,
    rate_limited,
    over_quota,
    total_tokens AS tokens,
    unknown_usage_requests AS unknown_usage,
    cost_pico_usd,
    unknown_cost_requests AS unknown_cost,
    CAST(latency_ms_sum AS DOUBLE PRECISION) / CASE WHEN requests = 0 THEN 1 ELSE requests END AS avg_latency_ms,
    first_seen,
    last_seen
FROM user_totals
"""

# Since 0009: each column named as the rollups' column it reads (one name per counter).
CREATE_USER_SUMMARY_NAMED_AS_ROLLUPS = """
CREATE VIEW user_summary AS
SELECT
    id,
    user_id,
    requests,
    errors,
    rate_limited,
    over_quota,
    total_tokens,
    unknown_usage_requests,
    cost_pico_usd,
    unknown_cost_requests,
    CAST(latency_ms_sum AS DOUBLE PRECISION) / CASE WHEN requests = 0 THEN 1 ELSE requests END AS avg_latency_ms,
    first_seen,
    last_seen
FROM user_totals
"""
