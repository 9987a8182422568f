from django.db import migrations, models

from proxy.migrations import _views


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0002_requests_created'),
    ]

    operations = [
        migrations.RunSQL(_views.CREATE_USER_SUMMARY_0003, _views.DROP_USER_SUMMARY),
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
