"""gunicorn's settings for every way we start it (the image, docker-compose, the tests): gunicorn
reads ./gunicorn.conf.py from the working directory by itself."""

# The access log names the path without its query string (%(U)s, not %(r)s), and no referer:
# a query string or a referring URL can carry a token or personal text.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s"'
