"""Keep-alive clients sending GET / and a valid POST / until a file appears; what they got.

The standard library only: tests/test_systemd.py runs it inside the booted machine, on that
machine's Python, against the site nginx serves there. It prints one JSON object when it stops:

    python3 load.py URL BODY CAFILE STOPFILE [CLIENTS]
"""

import collections
import http.client
import json
import os
import ssl
import sys
import threading
import urllib.parse


def main(url: str, body: str, cafile: str, stopfile: str, clients: int = 4) -> None:
    """Run the clients until STOPFILE exists, then print the counts."""
    address = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=cafile)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": url.rstrip("/")}
    statuses: collections.Counter = collections.Counter()  # "METHOD STATUS" -> count
    cut: collections.Counter = collections.Counter()  # method -> answers cut short
    errors: list[str] = []  # no answer at all
    lock = threading.Lock()

    def client():
        """Send requests on one kept-alive connection, a new one only when nginx closes it."""
        conn, method = None, "GET"
        while not os.path.exists(stopfile):
            if conn is None:
                conn = http.client.HTTPSConnection(address.hostname, context=context, timeout=60)
            try:
                conn.request(method, "/", body.encode() if method == "POST" else None, headers)
                res = conn.getresponse()
                res.read()  # raises IncompleteRead if fewer bytes came than Content-Length said
                with lock:
                    statuses[f"{method} {res.status}"] += 1
                if res.will_close:
                    conn.close()
                    conn = None
            except http.client.IncompleteRead:
                with lock:
                    cut[method] += 1
                conn.close()
                conn = None
            except (OSError, http.client.HTTPException) as error:
                with lock:
                    errors.append(f"{method}: {error!r}")
                conn.close()
                conn = None
            method = "POST" if method == "GET" else "GET"

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    json.dump({"statuses": statuses, "cut": cut, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:5], *(int(n) for n in sys.argv[5:6]))
