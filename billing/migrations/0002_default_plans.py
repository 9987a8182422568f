from django.db import migrations

# Starting points; operators change them in admin and set each Stripe price id.
DEFAULT_PLANS = [
    {"tier": "tier1", "requests_per_minute": 30, "monthly_requests": 3_000, "monthly_tokens": 2_000_000},
    {"tier": "tier2", "requests_per_minute": 60, "monthly_requests": 20_000, "monthly_tokens": 20_000_000},
    {"tier": "tier3", "requests_per_minute": 120, "monthly_requests": 100_000, "monthly_tokens": None},
]


def seed(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    for plan in DEFAULT_PLANS:
        Plan.objects.get_or_create(tier=plan["tier"], defaults=plan)


def unseed(apps, schema_editor):
    apps.get_model("billing", "Plan").objects.filter(tier__in=[p["tier"] for p in DEFAULT_PLANS]).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
