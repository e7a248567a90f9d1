"""Integration-test target: a Flask application for pre-fork servers (gunicorn, uWSGI) with
a leaking route, as a real service would have one.

    GET /leak  keeps an Order (with a few attributes) in a module-level list: a per-request
               cache that is never evicted, so every worker that serves it grows;
    GET /ok    builds a response and frees everything.

The server imports it as `prefork_app:app`. Works on Python 3.6 (Flask 2.0) to 3.15.
"""

from flask import Flask

app = Flask(__name__)


class Order(object):
    def __init__(self, number):
        self.number = number
        self.lines = (number, number + 1)
        self.note = "order %d" % number


ORDERS = []


@app.route("/leak")
def leak():
    ORDERS.append(Order(len(ORDERS)))
    return "kept %d\n" % len(ORDERS)


@app.route("/ok")
def ok():
    return "ok\n"
