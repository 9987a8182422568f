from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Account, ApiKey


class Command(BaseCommand):
    help = "Issue a gateway API key (gk_...) for USER_ID, creating the account if needed. Prints the key once."

    def add_arguments(self, parser):
        parser.add_argument("user_id")
        parser.add_argument("--name", default="", help="what the key is for, e.g. 'laptop'")
        parser.add_argument("--email", default="", help="email of a new account")

    def handle(self, *args, user_id: str, name: str, email: str, **options):
        account = account_for(user_id, email=email, stderr=self.stderr)
        _, raw_key = ApiKey.objects.issue(account, name=name)
        self.stderr.write(f"Key for {account.user_id} (shown once, store it now):")
        self.stdout.write(raw_key)


def account_for(user_id: str, *, email: str = "", stderr) -> Account:
    """The account of `user_id`, created (and said so) when it does not exist yet."""
    try:
        account, created = Account.objects.get_or_create_checked(user_id, email=email)
    except ValidationError as error:
        raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
    if created:
        stderr.write(f"Created account {user_id}.")
    return account
