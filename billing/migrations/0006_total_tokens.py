# One name per counter: the total tokens of a month are `total_tokens`, as in the access log
# and the rollups.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0005_rollups'),
    ]

    operations = [
        migrations.RenameField(model_name='monthlyusage', old_name='tokens', new_name='total_tokens'),
        migrations.RenameField(model_name='modelmonth', old_name='tokens', new_name='total_tokens'),
    ]
