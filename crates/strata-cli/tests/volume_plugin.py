#!/usr/bin/env python3
"""A Docker volume plugin for strata's tests: it serves the volume plugin protocol on a unix
socket and keeps each volume as a directory under a base directory, logging every call.

Usage: volume_plugin.py SOCKET BASE_DIR LOG_FILE
"""
import http.server
import json
import os
import shutil
import socketserver
import sys

SOCKET, BASE, LOG = sys.argv[1], sys.argv[2], sys.argv[3]
mounted = {}  # volume name -> set of container IDs


def path_of(name):
    return os.path.join(BASE, name)


def handle(method, req):
    name = req.get("Name", "")
    if method == "Plugin.Activate":
        return {"Implements": ["VolumeDriver"]}
    if method == "VolumeDriver.Capabilities":
        return {"Capabilities": {"Scope": "local"}}
    if method == "VolumeDriver.Create":
        os.makedirs(path_of(name), exist_ok=True)
        with open(path_of(name) + ".opts", "w") as f:
            json.dump(req.get("Opts") or {}, f)
        return {"Err": ""}
    if not os.path.isdir(path_of(name)) and method != "VolumeDriver.List":
        return {"Err": f"no such volume {name}"}
    if method == "VolumeDriver.Remove":
        if mounted.get(name):
            return {"Err": f"{name} is mounted"}
        shutil.rmtree(path_of(name))
        os.remove(path_of(name) + ".opts")
        return {"Err": ""}
    if method == "VolumeDriver.Mount":
        mounted.setdefault(name, set()).add(req["ID"])
        return {"Mountpoint": path_of(name), "Err": ""}
    if method == "VolumeDriver.Unmount":
        mounted.get(name, set()).discard(req["ID"])
        return {"Err": ""}
    if method == "VolumeDriver.Path":
        return {"Mountpoint": path_of(name) if mounted.get(name) else "", "Err": ""}
    if method == "VolumeDriver.Get":
        return {"Volume": {"Name": name, "Mountpoint": path_of(name)}, "Err": ""}
    if method == "VolumeDriver.List":
        names = [n for n in os.listdir(BASE) if not n.endswith(".opts")]
        return {"Volumes": [{"Name": n} for n in names], "Err": ""}
    return {"Err": f"unknown method {method}"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = json.loads(body or b"{}")
        method = self.path.lstrip("/")
        with open(LOG, "a") as log:
            log.write(f"{method} {req.get('Name', '')}\n")
        out = json.dumps(handle(method, req)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


os.makedirs(BASE, exist_ok=True)
if os.path.exists(SOCKET):
    os.remove(SOCKET)
with Server(SOCKET, Handler) as server:
    server.serve_forever()
