"""service3: a plain WSGI callable, no framework, loaded with `module = hello`."""


def application(environ, start_response):
    body = f"hello from service3 at {environ['PATH_INFO']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
