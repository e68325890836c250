import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbox.settings")
# A web process borrows database connections from a pool (settings.py); DB_POOL=0 turns it off.
os.environ.setdefault("DB_POOL", "1")
application = get_wsgi_application()
