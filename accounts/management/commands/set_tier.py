from django.core.management.base import BaseCommand, CommandError

from accounts.models import Account, Tier, TierChange


class Command(BaseCommand):
    help = "Set USER_ID's tier (tier1, tier2, tier3, or none); the change is recorded with source 'command'."

    def add_arguments(self, parser):
        parser.add_argument("user_id")
        parser.add_argument("tier", choices=[*Tier.values, "none"])
        parser.add_argument("--reference", default="", help="why, e.g. a ticket number")

    def handle(self, *args, user_id: str, tier: str, reference: str, **options):
        account = Account.objects.filter(user_id=user_id).first()
        if account is None:
            raise CommandError(f"No account {user_id!r}.")
        new_tier = "" if tier == "none" else tier
        if account.set_tier(new_tier, source=TierChange.Source.COMMAND, reference=reference):
            self.stdout.write(f"{user_id} is now {tier}.")
        else:
            self.stdout.write(f"{user_id} was already {tier}.")
