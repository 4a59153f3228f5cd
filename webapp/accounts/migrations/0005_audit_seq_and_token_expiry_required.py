from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_chain_existing_audit_events'),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditevent',
            name='seq',
            field=models.BigIntegerField(editable=False, unique=True),
        ),
        migrations.AlterField(
            model_name='apitoken',
            name='expires_at',
            field=models.DateTimeField(),
        ),
    ]
