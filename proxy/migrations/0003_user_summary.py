from django.db import migrations, models

# The view `user_summary` reads `requests`. A later migration that alters a column of
# `requests` fails while the view exists (SQLite: "error in view user_summary"; PostgreSQL:
# "cannot alter type of a column used by a view"): such a migration must run
# DROP_VIEW first and CREATE_VIEW (updated if need be) after its own operations.
CREATE_VIEW = """
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
DROP_VIEW = "DROP VIEW IF EXISTS user_summary"


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0002_requests_created'),
    ]

    operations = [
        migrations.RunSQL(CREATE_VIEW, DROP_VIEW),
        migrations.CreateModel(
            name='UserSummary',
            fields=[
                ('id', models.BigIntegerField(primary_key=True, serialize=False)),
                ('user_id', models.CharField(max_length=128)),
                ('requests', models.BigIntegerField()),
                ('errors', models.BigIntegerField(help_text='Requests answered with a status of 400 or more.')),
                ('rate_limited', models.BigIntegerField(help_text='Requests refused with 429.')),
                ('tokens', models.BigIntegerField()),
                ('avg_latency_ms', models.FloatField()),
                ('first_seen', models.DateTimeField()),
                ('last_seen', models.DateTimeField()),
            ],
            options={
                'verbose_name': 'user summary',
                'verbose_name_plural': 'user summaries',
                'db_table': 'user_summary',
                'managed': False,
            },
        ),
    ]
