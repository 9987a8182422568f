from django.db import migrations, models

from proxy.migrations import _views

# A model call (a successful POST) logged with 0 tokens had no usage in its response (a
# stream without include_usage, mostly): its usage is unknown, not 0.
MARK_UNKNOWN = (
    "UPDATE requests SET total_tokens = NULL "
    "WHERE total_tokens = 0 AND method = 'POST' AND status >= 200 AND status < 300"
)
UNMARK_UNKNOWN = "UPDATE requests SET total_tokens = 0 WHERE total_tokens IS NULL"


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0003_user_summary'),
    ]

    operations = [
        # The view reads the columns changed below (see 0003).
        migrations.RunSQL(_views.DROP_USER_SUMMARY, _views.CREATE_USER_SUMMARY_0003),
        migrations.RenameField(model_name='requestlog', old_name='tokens_est', new_name='total_tokens'),
        migrations.AlterField(
            model_name='requestlog',
            name='total_tokens',
            field=models.PositiveIntegerField(blank=True, help_text='usage.total_tokens reported by the upstream; empty: unknown.', null=True),
        ),
        migrations.AddField(
            model_name='requestlog',
            name='input_tokens',
            field=models.PositiveIntegerField(blank=True, help_text='Input (prompt) tokens, cached ones included; empty: unknown.', null=True),
        ),
        migrations.AddField(
            model_name='requestlog',
            name='cached_input_tokens',
            field=models.PositiveIntegerField(blank=True, help_text="Of the input tokens, those read from the provider's cache; empty: unknown.", null=True),
        ),
        migrations.AddField(
            model_name='requestlog',
            name='output_tokens',
            field=models.PositiveIntegerField(blank=True, help_text='Output (completion) tokens, reasoning included; empty: unknown.', null=True),
        ),
        migrations.RunSQL(MARK_UNKNOWN, UNMARK_UNKNOWN),
        migrations.RunSQL(_views.CREATE_USER_SUMMARY, _views.DROP_USER_SUMMARY),
        migrations.AlterField(
            model_name='usersummary',
            name='tokens',
            field=models.BigIntegerField(help_text='Tokens of the calls whose usage is known.'),
        ),
        migrations.AddField(
            model_name='usersummary',
            name='unknown_usage',
            field=models.BigIntegerField(default=0, help_text='Calls whose usage the upstream never reported.'),
            preserve_default=False,
        ),
    ]
