from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=50)
    api_key = models.CharField(max_length=50, default="")

    class Meta:
        app_label = "djangoapp"


def create_tables(alias: str = "default") -> None:
    from django.db import connections

    connection = connections[alias]
    with connection.schema_editor() as editor:
        if Item._meta.db_table not in connection.introspection.table_names():
            editor.create_model(Item)
