from django.db import models


class TableVersion(models.Model):
    """How many times a small table that workers keep in memory has changed (see
    gateway_project.lib.table_versions): used when REDIS_URL is not set."""

    name = models.CharField(max_length=64, primary_key=True)
    version = models.BigIntegerField(default=0)

    class Meta:
        db_table = "table_versions"

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
