# One name per counter: the view's columns take the names of the rollups' (user_totals)
# columns they read. The model over the view is unmanaged: its renames only change the state.

from django.db import migrations

from proxy.migrations import _views


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0008_request_upstream'),
    ]

    operations = [
        migrations.RunSQL(_views.DROP_USER_SUMMARY, _views.CREATE_USER_SUMMARY_OVER_ROLLUPS),
        migrations.RunSQL(_views.CREATE_USER_SUMMARY_NAMED_AS_ROLLUPS, _views.DROP_USER_SUMMARY),
        migrations.RenameField(model_name='usersummary', old_name='tokens', new_name='total_tokens'),
        migrations.RenameField(model_name='usersummary', old_name='unknown_usage', new_name='unknown_usage_requests'),
        migrations.RenameField(model_name='usersummary', old_name='unknown_cost', new_name='unknown_cost_requests'),
    ]
