"""A tiny Django project (settings, urls, views, one model) used by the tests.

Settings: ``tests.instrumentors.apps.djangoapp.settings``.  The SQLite file is
``DJANGO_DB`` or a per-process file in the temp folder; :func:`create_tables`
makes the table without migrations.
"""
