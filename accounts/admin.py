from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil

from accounts.models import Account, ApiKey, CodexCredential, TierChange, active_key_filter
from gateway_project.lib.read_only_admin import ReadOnlyAdmin, ReadOnlyInline


class ApiKeyInline(ReadOnlyInline):
    # Keys are issued with the action, which shows the plaintext once.
    model = ApiKey
    fields = readonly_fields = ["prefix", "name", "created_at", "last_used_at", "revoked_at"]
    show_change_link = True


class TierChangeInline(ReadOnlyInline):
    model = TierChange
    fields = readonly_fields = ["created_at", "old_tier", "new_tier", "source", "reference"]
    verbose_name_plural = "tier history"


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["user_id", "email", "tier", "active_keys", "codex_session", "created_at"]
    list_filter = ["tier"]
    search_fields = ["user_id", "email", "stripe_customer_id"]
    list_select_related = ["codex_credential"]
    readonly_fields = ["signed_in_at", "created_at", "updated_at"]
    inlines = [ApiKeyInline, TierChangeInline]
    actions = ["issue_api_key"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(active_key_count=Count("api_keys", filter=active_key_filter("api_keys__")))
        )

    @admin.display(description="active keys", ordering="active_key_count")
    def active_keys(self, account: Account) -> int:
        return account.active_key_count

    @admin.display(description="Codex session")
    def codex_session(self, account: Account) -> str:
        credential = getattr(account, "codex_credential", None)
        return session_status(credential) if credential else "—"

    def save_model(self, request, account: Account, form, change: bool) -> None:
        tier = account.tier
        if change and "tier" in form.changed_data:
            # The tier goes through set_tier, so the change lands in the history.
            account.tier = form.initial.get("tier", "")
            super().save_model(request, account, form, change)
            account.set_tier(tier, source=TierChange.Source.ADMIN, reference=request.user.get_username())
            return
        super().save_model(request, account, form, change)
        if not change and tier:
            TierChange.objects.create(
                account=account, new_tier=tier, source=TierChange.Source.ADMIN, reference=request.user.get_username()
            )

    @admin.action(description="Issue an API key for the selected accounts")
    def issue_api_key(self, request, queryset):
        issued = [(account, ApiKey.objects.issue(account, name="issued in admin")[1]) for account in queryset]
        # The plaintext is rendered on this one page, never stored (not even in a message cookie).
        context = {**self.admin_site.each_context(request), "title": "API keys issued", "issued": issued}
        response = TemplateResponse(request, "admin/accounts/issued_keys.html", context)
        response["Cache-Control"] = "no-store"
        return response


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "account", "name", "created_at", "last_used_at", "status"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["account__user_id", "prefix", "name"]
    list_select_related = ["account"]
    fields = ["account", "prefix", "name", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["account", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="status")
    def status(self, key: ApiKey) -> str:
        return "active" if key.is_active else f"revoked {timesince(key.revoked_at)} ago"

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        count = queryset.revoke()
        self.message_user(
            request,
            f"Revoked {count} key(s). Every worker refuses them within CHANGE_CHECK_MS.",
            messages.SUCCESS,
        )


class CodexCredentialForm(forms.ModelForm):
    """Tokens are write-only: never rendered back; left blank on change, they stay as they are."""

    access_token = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False, strip=True)
    refresh_token = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False, strip=True)

    class Meta:
        model = CodexCredential
        fields = ["account", "access_token", "refresh_token", "expires_at"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.pop("access_token", None)
        self.initial.pop("refresh_token", None)
        if self.instance.pk:
            for name in ("access_token", "refresh_token"):
                self.fields[name].help_text = "Stored (encrypted). Leave blank to keep it."

    def clean_access_token(self) -> str:
        token = self.cleaned_data["access_token"]
        if not token and not self.instance.pk:
            raise forms.ValidationError("An access token is required for a new session.")
        return token

    def save(self, commit: bool = True):
        credential = super().save(commit=False)
        for name in ("access_token", "refresh_token"):
            if not self.cleaned_data[name] and self.instance.pk:
                setattr(credential, name, CodexCredential.objects.get(pk=self.instance.pk).__dict__[name])
        credential.last_refresh_error = ""
        if commit:
            credential.save()
        return credential


@admin.register(CodexCredential)
class CodexCredentialAdmin(admin.ModelAdmin):
    form = CodexCredentialForm
    list_display = ["account", "status", "last_refreshed_at", "last_refresh_error"]
    search_fields = ["account__user_id"]
    list_select_related = ["account"]
    autocomplete_fields = ["account"]
    readonly_fields = ["status", "last_refreshed_at", "last_refresh_error"]

    @admin.display(description="status")
    def status(self, credential: CodexCredential) -> str:
        return session_status(credential)


class AccountRecordAdmin(ReadOnlyAdmin):
    """Records the gateway keeps about an account (tier changes, Stripe events): read-only,
    listed with their account in one query."""

    list_select_related = ["account"]


@admin.register(TierChange)
class TierChangeAdmin(AccountRecordAdmin):
    list_display = ["created_at", "account", "old_tier", "new_tier", "source", "reference"]
    list_filter = ["source", "new_tier"]
    search_fields = ["account__user_id", "reference"]


def session_status(credential: CodexCredential) -> str:
    now = timezone.now()
    if credential.expires_at is None:
        return "—"
    if credential.expires_at <= now:
        return f"expired {timesince(credential.expires_at, now)} ago"
    return f"expires in {timeuntil(credential.expires_at, now)}"
