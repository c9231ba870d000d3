"""Security desk console: a Flask app factory with blueprints."""
