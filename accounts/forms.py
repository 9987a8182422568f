from django import forms

from accounts.models import ApiKey

MAX_AUTH_JSON_BYTES = 64 * 1024


class EmailSignInForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))


class KeySignInForm(forms.Form):
    key = forms.CharField(
        label="Gateway API key",
        max_length=200,
        strip=True,
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "placeholder": "gk_..."}),
    )


class NewKeyForm(forms.Form):
    name = forms.CharField(
        max_length=ApiKey._meta.get_field("name").max_length,
        required=False,
        help_text="What the key is for, e.g. laptop.",
    )


class CodexSessionForm(forms.Form):
    auth_json = forms.FileField(
        label="auth.json",
        help_text="The file `codex login` writes: ~/.codex/auth.json.",
    )

    def clean_auth_json(self) -> str:
        upload = self.cleaned_data["auth_json"]
        if upload.size > MAX_AUTH_JSON_BYTES:
            limit = MAX_AUTH_JSON_BYTES // 1024
            raise forms.ValidationError(f"This file is larger than an auth.json ({limit} KiB at most).")
        try:
            return upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError(
                "This file is not text: choose the auth.json that `codex login` wrote."
            ) from None
