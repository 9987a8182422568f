from django.db import migrations, models

from proxy.migrations import _views


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0006_request_id"),
        ("billing", "0005_rollups"),
    ]

    operations = [
        migrations.RunSQL(_views.DROP_USER_SUMMARY, _views.CREATE_USER_SUMMARY),
        migrations.RunSQL(_views.CREATE_USER_SUMMARY_OVER_ROLLUPS, _views.DROP_USER_SUMMARY),
        migrations.AddField(
            model_name="usersummary",
            name="over_quota",
            field=models.BigIntegerField(default=0, help_text="Requests refused with 402."),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="usersummary",
            name="cost_pico_usd",
            field=models.BigIntegerField(
                default=0, help_text="Cost of the calls whose cost is known.", verbose_name="cost (pico-USD)"
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="usersummary",
            name="unknown_cost",
            field=models.BigIntegerField(default=0, help_text="Calls whose cost is unknown."),
            preserve_default=False,
        ),
    ]
