import os
import tempfile

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.instrumentors.apps.djangoapp.urls"
INSTALLED_APPS = ["tests.instrumentors.apps.djangoapp"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB") or os.path.join(tempfile.gettempdir(), f"djangoapp-{os.getpid()}.db"),
    },
    # PostgreSQL where it is reachable (tests using it skip otherwise)
    "pg": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DJANGO_PG_DB", "test"),
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    },
}
USE_TZ = True
LOGGING_CONFIG = None
