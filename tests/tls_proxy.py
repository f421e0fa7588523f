"""A TLS front for a plain-HTTP server, for tests: an `https` endpoint whose
certificate comes from a test's own CA (an S3 server with a private CA).

    proxy = TlsProxy(cert_pem_path, key_pem_path, backend_port)
    ... https://127.0.0.1:{proxy.port} ...
    proxy.stop()

Each accepted connection is wrapped in TLS and piped both ways to the
backend on 127.0.0.1, on threads of its own.
"""
import socket
import ssl
import threading

from harness import free_port


class TlsProxy:
    def __init__(self, cert_path, key_path, backend_port):
        self.port = free_port()
        self.backend_port = backend_port
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)
        self._ctx = ctx
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            tls = self._ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        try:
            backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=30)
        except OSError:
            tls.close()
            return

        def pipe(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(backend, tls), daemon=True).start()
        pipe(tls, backend)

    def stop(self):
        self._stopped = True
        self._sock.close()
