from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records the gateway writes itself (logs, history, events): operators look, never edit."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """Rows of such records shown under another object's page: listed, never added or removed."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False
