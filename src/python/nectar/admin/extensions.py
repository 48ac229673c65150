"""Flask extensions admin uses, created unbound and bound to the app in `create_app`."""

from flask_wtf import CSRFProtect

csrf = CSRFProtect()
