"""Create and fill the catalogue's SQLite database (``CATALOG_DB``) before the server starts."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "catalog.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from catalog.models import Product  # noqa: E402

call_command("migrate", run_syncdb=True, verbosity=0)
Product.objects.all().delete()
Product.objects.bulk_create([Product(pk=i, name=f"item {i}", price_cents=199 * i + 50, stock=10 ** 6)
                             for i in range(1, 21)])
