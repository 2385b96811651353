"""HCCL rank tables: convert ModelArts' v0.1 table to v1.0, generate one from `hccn_tool` output, merge
per-server tables, validate.

v1.0 (what MindSpore/HCCL read):
    {"version": "1.0", "server_count": "2", "status": "completed",
     "server_list": [{"server_id": "10.0.0.1", "host_nic_ip": "reserve",
                      "device": [{"device_id": "0", "device_ip": "192.1.1.1", "rank_id": "0"}, ...]}, ...]}
v0.1 (ModelArts' /user/config/jobstart_hccl.json):
    {"status": "completed", "group_count": "1",
     "group_list": [{"group_name": "...", "device_count": "16", "instance_count": "2",
                     "instance_list": [{"pod_name": "...", "server_id": "10.0.0.1",
                                        "devices": [{"device_id": "0", "device_ip": "192.1.1.1"}, ...]}, ...]}]}
Ranks are numbered server by server in the order the servers are listed, devices by device id.

    python -m mindtune.launch.ranktable convert IN.json OUT.json
    python -m mindtune.launch.ranktable merge OUT.json IN1.json IN2.json ...
    python -m mindtune.launch.ranktable validate IN.json
    python -m mindtune.launch.ranktable generate OUT.json --server-id IP [--devices 0-7] [--hccn-dir DIR]
"""
import argparse
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List

from mindtune.atomic import atomic_write
from mindtune.errors import ConfigError


def load(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"rank table not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: a rank table is a JSON object")
    return table


def save(table: dict, path: str):
    with atomic_write(path) as f:
        json.dump(table, f, indent=2)
        f.write("\n")


def version(table: dict) -> str:
    if "server_list" in table:
        return str(table.get("version", "1.0"))
    if "group_list" in table:
        return "0.1"
    raise ConfigError("rank table: neither a v1.0 table (server_list) nor a v0.1 table (group_list)")


def _by_device_id(devices, where):
    try:
        return sorted(devices, key=lambda d: int(d["device_id"]))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: every device needs an integer device_id") from None


def build_v10(servers: List[dict]) -> dict:
    """servers: [{"server_id", "devices": [{"device_id", "device_ip"}]}] -> a v1.0 table with rank ids."""
    rank = 0
    server_list = []
    for s in servers:
        devices = []
        for d in _by_device_id(s["devices"], f"server {s['server_id']}"):
            devices.append({"device_id": str(d["device_id"]), "device_ip": str(d["device_ip"]), "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": str(s["server_id"]), "device": devices, "host_nic_ip": "reserve"})
    return {"version": "1.0", "server_count": str(len(server_list)), "server_list": server_list,
            "status": "completed"}


def pod_index(instance: dict) -> int:
    """The index of a v0.1 instance's pod (`job-abc-worker-3` -> 3): ModelArts' VC_TASK_INDEX of that node."""
    import re

    found = re.search(r"(\d+)$", str(instance.get("pod_name", "")))
    if not found:
        raise ConfigError(f"rank table v0.1: instance pod_name {instance.get('pod_name')!r} has no trailing index")
    return int(found.group(1))


def convert_v01(table: dict) -> dict:
    """ModelArts v0.1 -> v1.0. Servers are ranked by pod index (the node's VC_TASK_INDEX), not by their order in
    the file; instances sharing a server_id (several pods on one server) are merged."""
    if version(table) == "1.0":
        return table
    groups = table.get("group_list") or []
    if not groups:
        raise ConfigError("rank table v0.1: group_list is empty")
    servers: Dict[str, dict] = {}
    for g in groups:
        for inst in sorted(g.get("instance_list") or [], key=pod_index):
            sid = inst.get("server_id")
            if not sid or not isinstance(inst.get("devices"), list):
                raise ConfigError(f"rank table v0.1: instance {inst.get('pod_name', '?')} needs server_id and devices")
            servers.setdefault(sid, {"server_id": sid, "devices": []})["devices"].extend(inst["devices"])
    if not servers:
        raise ConfigError("rank table v0.1: no instances in group_list")
    return build_v10(list(servers.values()))


def merge(tables: List[dict]) -> dict:
    """Concatenate the servers of several tables (e.g. one generated per server) and renumber the ranks."""
    servers = []
    for t in tables:
        t = convert_v01(t)
        for s in t["server_list"]:
            servers.append({"server_id": s["server_id"], "devices": s["device"]})
    return build_v10(servers)


def validate(table: dict) -> List[str]:
    """Problems of a v1.0 table (empty list: ok)."""
    problems = []
    try:
        v = version(table)
    except ConfigError as exc:
        return [str(exc)]
    if v != "1.0":
        return [f"version {v}: convert it to 1.0 first (python -m mindtune.launch.ranktable convert)"]
    servers = table.get("server_list")
    if not isinstance(servers, list) or not servers:
        return ["server_list is empty"]
    if str(table.get("server_count")) != str(len(servers)):
        problems.append(f"server_count is {table.get('server_count')!r} but server_list has {len(servers)} servers")
    if table.get("status", "completed") != "completed":
        problems.append(f"status is {table.get('status')!r}, not 'completed'")
    ranks, ips, server_ids, counts = [], {}, set(), set()
    for s in servers:
        sid = s.get("server_id")
        if sid in server_ids:
            problems.append(f"server {sid} is listed twice")
        server_ids.add(sid)
        devices = s.get("device") or []
        counts.add(len(devices))
        seen = set()
        for d in devices:
            did, ip, rank = d.get("device_id"), d.get("device_ip"), d.get("rank_id")
            if did in seen:
                problems.append(f"server {sid}: device_id {did} is listed twice")
            seen.add(did)
            try:
                ipaddress.IPv4Address(str(ip))
            except ValueError:
                problems.append(f"server {sid}: device {did} has an invalid device_ip {ip!r}")
            if ip in ips:
                problems.append(f"server {sid}: device {did} repeats device_ip {ip} of {ips[ip]}")
            ips[ip] = f"server {sid} device {did}"
            try:
                ranks.append(int(rank))
            except (TypeError, ValueError):
                problems.append(f"server {sid}: device {did} has no integer rank_id")
    if sorted(ranks) != list(range(len(ranks))):
        problems.append(f"rank_id values must be 0..{len(ranks) - 1}, each once")
    if len(counts) > 1:
        problems.append(f"servers have different device counts {sorted(counts)}")
    return problems


# -- generation from hccn_tool ---------------------------------------------------------------------------
_IP = re.compile(r"ipaddr\s*:\s*([0-9.]+)")


def parse_hccn_ip(text: str) -> str:
    """The address in `hccn_tool -i N -ip -g` output ("ipaddr:192.98.92.100\\nnetmask:...")."""
    m = _IP.search(text or "")
    if not m:
        raise ConfigError(f"no 'ipaddr:' in hccn_tool output: {text.strip()[:80]!r}")
    return m.group(1)


def parse_devices(spec: str) -> List[int]:
    """'0-7' or '0,1,2,3' -> device ids."""
    out = []
    for part in spec.split(","):
        if re.fullmatch(r"\d+-\d+", part):
            a, b = map(int, part.split("-"))
            if a > b:
                raise ConfigError(f"--devices {spec}: {part} is an empty range")
            out.extend(range(a, b + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ConfigError(f"--devices {spec}: use a range like 0-7 or a list like 0,1,2,3")
    if len(set(out)) != len(out):
        raise ConfigError(f"--devices {spec}: a device is listed twice")
    return out


def generate(server_id: str, devices: List[int], hccn_outputs: Dict[int, str]) -> dict:
    """A one-server v1.0 table from each device's `hccn_tool -i N -ip -g` output."""
    try:
        ipaddress.IPv4Address(server_id)
    except ValueError:
        raise ConfigError(f"--server-id {server_id!r}: give this server's IPv4 address") from None
    return build_v10([{"server_id": server_id,
                       "devices": [{"device_id": d, "device_ip": parse_hccn_ip(hccn_outputs[d])} for d in devices]}])


def _hccn_outputs(devices, hccn_dir=None) -> Dict[int, str]:
    """Run hccn_tool per device, or read saved outputs DIR/<id>.txt (for a host without the tool)."""
    if hccn_dir:
        out = {}
        for d in devices:
            path = os.path.join(hccn_dir, f"{d}.txt")
            if not os.path.isfile(path):
                raise ConfigError(f"--hccn-dir: {path} not found (save `hccn_tool -i {d} -ip -g` output there)")
            with open(path, encoding="utf-8") as f:
                out[d] = f.read()
        return out
    tool = shutil.which("hccn_tool") or next((p for p in ("/usr/local/Ascend/driver/tools/hccn_tool",)
                                              if os.path.isfile(p)), None)
    if tool is None:
        raise ConfigError("hccn_tool not found (no Ascend driver on this host); run on an NPU server or pass "
                          "--hccn-dir with saved `hccn_tool -i N -ip -g` outputs")
    out = {}
    for d in devices:
        proc = subprocess.run([tool, "-i", str(d), "-ip", "-g"], capture_output=True, text=True, timeout=30)
        if proc.returncode:
            raise ConfigError(f"hccn_tool -i {d} -ip -g failed: {(proc.stderr or proc.stdout).strip()[:200]}")
        out[d] = proc.stdout
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mindtune.launch.ranktable", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("convert", help="v0.1 (ModelArts) -> v1.0")
    p.add_argument("src")
    p.add_argument("dst")
    p = sub.add_parser("merge", help="join per-server tables into one")
    p.add_argument("dst")
    p.add_argument("srcs", nargs="+")
    p = sub.add_parser("validate", help="check a v1.0 table")
    p.add_argument("src")
    p = sub.add_parser("generate", help="one server's table from hccn_tool")
    p.add_argument("dst")
    p.add_argument("--server-id", required=True, help="this server's IP address")
    p.add_argument("--devices", default="0-7")
    p.add_argument("--hccn-dir", help="read saved hccn_tool outputs DIR/<device>.txt instead of running it")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "convert":
            table = convert_v01(load(args.src))
            _check_or_raise(table, args.src)
            save(table, args.dst)
            print(f"{args.dst}: {table['server_count']} server(s), "
                  f"{sum(len(s['device']) for s in table['server_list'])} device(s)")
        elif args.cmd == "merge":
            table = merge([load(p) for p in args.srcs])
            _check_or_raise(table, "merged table")
            save(table, args.dst)
            print(f"{args.dst}: {table['server_count']} server(s)")
        elif args.cmd == "validate":
            problems = validate(load(args.src))
            for problem in problems:
                print(f"{args.src}: {problem}", file=sys.stderr)
            if problems:
                return 1
            print(f"{args.src}: ok")
        else:
            devices = parse_devices(args.devices)
            table = generate(args.server_id, devices, _hccn_outputs(devices, args.hccn_dir))
            _check_or_raise(table, "generated table")
            save(table, args.dst)
            print(f"{args.dst}: server {args.server_id}, {len(devices)} device(s)")
    except (ConfigError, ValueError) as exc:
        print(f"ranktable: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _check_or_raise(table, where):
    problems = validate(table)
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}")


if __name__ == "__main__":
    sys.exit(main())
