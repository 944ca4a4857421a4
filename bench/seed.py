"""The seed (the wsgiref tutorial's POST form), ported to Python 3 as little as possible."""

# The port: cgi.parse_qs and cgi.escape are gone (urllib.parse.parse_qs, html.escape), the body is
# bytes, and the server binds HOST:PORT from the environment. `make bench` serves `application`
# with the Procfile's Waitress command line, as it serves every target, so it measures the code.
import os
from html import escape
from urllib.parse import parse_qs
from wsgiref.simple_server import make_server

html = """<!DOCTYPE html>
<html>
<body>
   <form method="post" action="">
        <p>
           Age: <input type="text" name="age" value="%(age)s">
        </p>
        <p>
            Hobbies:
            <input
                name="hobbies" type="checkbox" value="software"
                %(checked-software)s
            > Software
            <input
                name="hobbies" type="checkbox" value="tunning"
                %(checked-tunning)s
            > Auto Tunning
        </p>
        <p>
            <input type="submit" value="Submit">
        </p>
    </form>
    <p>
        Age: %(age)s<br>
        Hobbies: %(hobbies)s
    </p>
</body>
</html>
"""


def application(environ, start_response):
    """The seed's handler: parse the body, escape it, fill in the page."""
    # the environment variable CONTENT_LENGTH may be empty or missing
    try:
        request_body_size = int(environ.get("CONTENT_LENGTH", 0))
    except ValueError:
        request_body_size = 0

    # When the method is POST the variable will be sent
    # in the HTTP request body which is passed by the WSGI server
    # in the file like wsgi.input environment variable.
    request_body = environ["wsgi.input"].read(request_body_size).decode()
    d = parse_qs(request_body)

    age = d.get("age", [""])[0]  # Returns the first age value.
    hobbies = d.get("hobbies", [])  # Returns a list of hobbies.

    # Always escape user input to avoid script injection
    age = escape(age)
    hobbies = [escape(hobby) for hobby in hobbies]

    response_body = (
        html
        % {  # Fill the above html template in
            "checked-software": ("", "checked")["software" in hobbies],
            "checked-tunning": ("", "checked")["tunning" in hobbies],
            "age": age or "Empty",
            "hobbies": ", ".join(hobbies or ["No Hobbies?"]),
        }
    ).encode()

    status = "200 OK"

    response_headers = [
        ("Content-Type", "text/html"),
        ("Content-Length", str(len(response_body))),
    ]

    start_response(status, response_headers)
    return [response_body]


if __name__ == "__main__":
    httpd = make_server(os.environ.get("HOST", "localhost"), int(os.environ["PORT"]), application)
    httpd.serve_forever()
