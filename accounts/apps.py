from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        from accounts import caller_changes, checks  # noqa: F401  (registers the checks)

        caller_changes.follow_changes()
