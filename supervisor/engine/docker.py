"""The ONLY module that imports `docker`: a synchronous adapter over docker-py.

Blocking: every method here is called on the engine runner's thread pool
(`engine/runner.py`), never on the event loop. It returns model objects and translates
docker-py/requests errors into `supervisor.errors.Engine*` at the boundary.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import requests

from supervisor import errors
from supervisor.model.current import (
    CONFIG_HASH_LABEL,
    ContainerInfo,
    Current,
    ImageInfo,
    NetworkInfo,
    VolumeInfo,
)
from supervisor.model.spec import ContainerSpec, NetworkSpec, VolumeSpec, parse_container_name

_LOGGER = logging.getLogger(__name__)

SUPERVISOR0 = "supervisor0"
SUPERVISOR0_SUBNET = "10.114.104.0/25"
SUPERVISOR0_GATEWAY = "10.114.104.1"
_VOLUME_NAME = re.compile(r"(\d+)_(\S+)")


def normalise_labels(labels: dict[str, str] | None) -> dict[str, str]:
    """Legacy io.resin.* labels read as io.balena.*; io.balena.* wins on conflict."""
    out: dict[str, str] = {}
    for key, value in (labels or {}).items():
        if key.startswith("io.resin."):
            out.setdefault("io.balena." + key[len("io.resin."):], value)
    for key, value in (labels or {}).items():
        if not key.startswith("io.resin."):
            out[key] = value
    return out


def _translate(err: Exception, what: str) -> errors.EngineError:
    if isinstance(err, docker.errors.ImageNotFound):
        return errors.ImageNotFound(f"{what}: {err.explanation or err}")
    if isinstance(err, docker.errors.NotFound):
        return errors.EngineNotFound(f"{what}: {err.explanation or err}")
    if isinstance(err, docker.errors.APIError):
        if err.status_code == 409:
            return errors.EngineConflict(f"{what}: {err.explanation or err}")
        return errors.EngineError(f"{what}: {err.explanation or err}")
    return errors.EngineError(f"{what}: {err}")


class DockerEngine:
    """Blocking: call via `AsyncEngine` (engine/runner.py)."""

    def __init__(self, base_url: str, *, timeout: int = 900, pool_size: int = 10) -> None:
        self.base_url = base_url
        self.client = docker.DockerClient(
            base_url=base_url, version="auto", timeout=timeout, max_pool_size=pool_size
        )
        self.api = self.client.api
        # parsed inspect results by id, with the list-status key they were read at
        self._inspect_cache: dict[str, tuple[str, ContainerInfo | None]] = {}
        self._inspect_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="inspect")

    def close(self) -> None:
        stream = getattr(self, "_events_stream", None)
        if stream is not None:
            _close_stream(stream)  # unblocks the events thread's read at once
        self._inspect_pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    # -- observe -----------------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            return bool(self.api.ping())
        except Exception:
            return False

    def observe(self) -> Current:
        """One pass over Docker: supervised containers, images, app networks and volumes."""
        try:
            containers = self._containers()
            images = tuple(self._image(i) for i in self.api.images(all=False))
            networks = self._networks()
            volumes = self._volumes()
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, "observe") from err
        return Current(
            containers=containers,
            images=images,
            networks=networks,
            volumes=volumes,
            supervisor0_ok=self._supervisor0_ok(),
        )

    def _containers(self) -> tuple[ContainerInfo, ...]:
        seen: dict[str, str] = {}
        for label in ("io.balena.supervised", "io.resin.supervised"):
            for summary in self.api.containers(all=True, filters={"label": label}):
                seen[summary["Id"]] = _status_key(summary)
        # only containers whose state changed are inspected again, several at a time
        misses = [cid for cid, key in seen.items()
                  if (hit := self._inspect_cache.get(cid)) is None or hit[0] != key]
        for cid, info in zip(misses, self._inspect_pool.map(self._inspect_or_none, misses),
                             strict=True):
            if info is None:
                self._inspect_cache.pop(cid, None)  # vanished between list and inspect
            else:
                self._inspect_cache[cid] = (seen[cid], self._container(info))
        for cid in list(self._inspect_cache):
            if cid not in seen:
                del self._inspect_cache[cid]
        out = [hit[1] for cid in seen
               if (hit := self._inspect_cache.get(cid)) is not None and hit[1] is not None]
        out.sort(key=lambda c: (c.app_id, c.service_name, c.created))
        return tuple(out)

    def _inspect_or_none(self, cid: str) -> dict[str, Any] | None:
        try:
            return dict(self.api.inspect_container(cid))
        except docker.errors.NotFound:
            return None

    def invalidate(self, cid: str) -> None:
        """Forget the cached inspect of a container (a Docker event said it changed)."""
        self._inspect_cache.pop(cid, None)

    def inspect_container(self, cid: str) -> ContainerInfo | None:
        try:
            info = self.api.inspect_container(cid)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"inspect {cid}") from err
        return self._container(info)

    def _container(self, info: dict[str, Any]) -> ContainerInfo | None:
        config = info.get("Config") or {}
        labels = normalise_labels(config.get("Labels"))
        name = info.get("Name", "").lstrip("/")
        parsed = parse_container_name(name)
        try:
            app_id = int(labels["io.balena.app-id"])
            service_id = int(labels.get("io.balena.service-id", "0"))
        except (KeyError, ValueError):
            _LOGGER.warning("Ignoring supervised container %s with bad labels", name)
            return None
        if parsed is None:
            _LOGGER.warning("Ignoring supervised container with unparseable name %s", name)
            return None
        service_name = labels.get("io.balena.service-name") or parsed[0]
        _, image_id, release_id, commit = parsed
        state = info.get("State") or {}
        env: dict[str, str] = {}
        for item in config.get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        host = info.get("HostConfig") or {}
        nets = ((info.get("NetworkSettings") or {}).get("Networks")) or {}
        return ContainerInfo(
            id=info["Id"],
            name=name,
            app_id=app_id,
            app_uuid=labels.get("io.balena.app-uuid", str(app_id)),
            service_name=service_name,
            service_id=service_id,
            image_id=image_id,
            release_id=release_id,
            commit=commit or "",
            state=state.get("Status", ""),
            running=bool(state.get("Running")),
            image=info.get("Image", ""),
            image_name=config.get("Image", ""),
            created=info.get("Created", ""),
            started_at=state.get("StartedAt"),
            exit_code=state.get("ExitCode"),
            exit_error=state.get("Error", "") or "",
            labels=labels,
            env=env,
            networks={k: tuple((v or {}).get("Aliases") or ()) for k, v in nets.items()},
            network_mode=host.get("NetworkMode", ""),
            volumes=tuple(
                m["Name"] for m in info.get("Mounts") or () if m.get("Type") == "volume"
            ),
            config_hash=labels.get(CONFIG_HASH_LABEL),
            restart_policy=(host.get("RestartPolicy") or {}).get("Name", ""),
            handover_old=name.startswith("old_"),
        )

    @staticmethod
    def _image(summary: dict[str, Any]) -> ImageInfo:
        return ImageInfo(
            id=summary["Id"],
            tags=tuple(summary.get("RepoTags") or ()),
            digests=tuple(summary.get("RepoDigests") or ()),
            size=int(summary.get("Size") or 0),
            labels=summary.get("Labels") or {},
        )

    def _networks(self) -> tuple[NetworkInfo, ...]:
        out: dict[str, NetworkInfo] = {}
        for label in ("io.balena.supervised", "io.resin.supervised"):
            for net in self.api.networks(filters={"label": label}):
                labels = normalise_labels(net.get("Labels"))
                app_id = labels.get("io.balena.app-id")
                name = net["Name"]
                app_uuid = name.split("_", 1)[0] if "_" in name else None
                ipam = (net.get("IPAM") or {}).get("Config") or []
                out[net["Id"]] = NetworkInfo(
                    id=net["Id"],
                    name=name,
                    app_id=int(app_id) if app_id and app_id.isdigit() else None,
                    app_uuid=app_uuid,
                    driver=net.get("Driver", ""),
                    labels=labels,
                    config_hash=labels.get(CONFIG_HASH_LABEL),
                    subnets=tuple((c.get("Subnet", ""), c.get("Gateway", "")) for c in ipam),
                    options=net.get("Options") or {},
                )
        return tuple(sorted(out.values(), key=lambda n: n.name))

    def _volumes(self) -> tuple[VolumeInfo, ...]:
        out = []
        for vol in (self.api.volumes() or {}).get("Volumes") or []:
            match = _VOLUME_NAME.search(vol["Name"])
            if not match:
                continue
            labels = normalise_labels(vol.get("Labels"))
            out.append(
                VolumeInfo(
                    name=vol["Name"],
                    app_id=int(match.group(1)),
                    app_uuid=labels.get("io.balena.app-uuid"),
                    driver=vol.get("Driver", "local"),
                    labels=labels,
                    config_hash=labels.get(CONFIG_HASH_LABEL),
                    mountpoint=vol.get("Mountpoint", ""),
                )
            )
        return tuple(sorted(out, key=lambda v: v.name))

    def _supervisor0_ok(self) -> bool:
        try:
            net = self.api.inspect_network(SUPERVISOR0)
        except docker.errors.NotFound:
            return False
        cfg = ((net.get("IPAM") or {}).get("Config") or [{}])[0]
        return cfg.get("Subnet") == SUPERVISOR0_SUBNET and cfg.get("Gateway") == SUPERVISOR0_GATEWAY

    # -- images --------------------------------------------------------------------------------

    def image_id(self, ref: str) -> str | None:
        try:
            return str(self.api.inspect_image(ref)["Id"])
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"inspect image {ref}") from err

    def pull(
        self,
        ref: str,
        on_event: Callable[[dict[str, Any]], None],
        cancel: threading.Event,
        auth: dict[str, str] | None = None,
    ) -> str:
        """Pull `ref`, feeding each progress event to `on_event`; returns the image id.

        `cancel` is checked between events, so an abandoned pull stops within one event.
        """
        repo, tag = _split_ref(ref)
        try:
            stream = self.api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth)
            for event in stream:
                if cancel.is_set():
                    _close_stream(stream)
                    raise errors.EngineError(f"pull of {ref} cancelled")
                if "error" in event:
                    raise errors.EngineError(f"pull {ref}: {event['error']}")
                on_event(event)
        except docker.errors.NotFound as err:
            raise errors.ImageNotFound(f"image {ref} not found: {err.explanation}") from err
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"pull {ref}") from err
        image_id = self.image_id(ref)
        if image_id is None:
            raise errors.ImageNotFound(f"image {ref} missing after pull")
        return image_id

    def remove_image(self, image: str) -> None:
        try:
            self.api.remove_image(image, force=True)
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"remove image {image}") from err

    # -- containers ----------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        try:
            created = self.api.create_container_from_config(spec.body, name=spec.name)
            cid = str(created["Id"])
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"create {spec.name}") from err
        try:
            for net_name, endpoint in spec.extra_networks:
                ipam = endpoint.get("IPAMConfig") or {}
                self.api.connect_container_to_network(
                    cid,
                    net_name,
                    aliases=endpoint.get("Aliases"),
                    ipv4_address=ipam.get("IPv4Address"),
                    ipv6_address=ipam.get("IPv6Address"),
                    link_local_ips=ipam.get("LinkLocalIPs"),
                )
        except (docker.errors.DockerException, requests.RequestException) as err:
            # never leave a half-created container behind: it would look installed
            self.remove(cid, force=True)
            raise _translate(err, f"connect {spec.name}") from err
        return cid

    def find_container(self, name: str) -> str | None:
        try:
            return str(self.api.inspect_container(name)["Id"])
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"inspect {name}") from err

    def start(self, cid: str) -> None:
        try:
            self.api.start(cid)
        except docker.errors.APIError as err:
            if err.status_code == 304:
                return
            raise _translate(err, f"start {cid[:12]}") from err
        except requests.RequestException as err:
            raise _translate(err, f"start {cid[:12]}") from err

    def stop(self, cid: str, timeout: int | None = None) -> None:
        try:
            if timeout is None:
                self.api.stop(cid)
            else:
                self.api.stop(cid, timeout=timeout)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as err:
            if err.status_code == 304:
                return
            raise _translate(err, f"stop {cid[:12]}") from err
        except requests.RequestException as err:
            raise _translate(err, f"stop {cid[:12]}") from err

    def remove(self, cid: str, *, force: bool = False) -> None:
        try:
            self.api.remove_container(cid, v=True, force=force)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as err:
            if err.status_code == 409 and "already in progress" in str(err.explanation):
                return
            raise _translate(err, f"remove {cid[:12]}") from err
        except requests.RequestException as err:
            raise _translate(err, f"remove {cid[:12]}") from err

    def rename(self, cid: str, name: str) -> None:
        try:
            self.api.rename(cid, name)
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"rename {cid[:12]}") from err

    def clear_restart_policy(self, cid: str) -> None:
        try:
            self.api.update_container(cid, restart_policy={"Name": "no"})
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"update {cid[:12]}") from err

    # -- networks and volumes --------------------------------------------------------------------

    def create_network(self, spec: NetworkSpec) -> None:
        try:
            self.api.create_network(spec.name, **spec.kwargs)
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"create network {spec.name}") from err

    def remove_network(self, net_id: str) -> None:
        try:
            self.api.remove_network(net_id)
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"remove network {net_id[:12]}") from err

    def ensure_supervisor_network(self) -> None:
        try:
            with contextlib.suppress(docker.errors.NotFound):
                self.api.remove_network(SUPERVISOR0)
            ipam = docker.types.IPAMConfig(
                pool_configs=[
                    docker.types.IPAMPool(subnet=SUPERVISOR0_SUBNET, gateway=SUPERVISOR0_GATEWAY)
                ]
            )
            self.api.create_network(
                SUPERVISOR0,
                driver="bridge",
                ipam=ipam,
                options={"com.docker.network.bridge.name": SUPERVISOR0},
            )
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, "ensure supervisor0") from err

    def create_volume(self, spec: VolumeSpec) -> None:
        try:
            self.api.create_volume(
                spec.name, driver=spec.driver, driver_opts=dict(spec.driver_opts) or None,
                labels=dict(spec.labels),
            )
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"create volume {spec.name}") from err

    def remove_volume(self, name: str) -> None:
        try:
            self.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, requests.RequestException) as err:
            raise _translate(err, f"remove volume {name}") from err

    # -- streams -------------------------------------------------------------------------------

    def events(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """Container events until `stop` is set; the caller runs this on its own thread."""
        stream = self.api.events(decode=True, filters={"type": "container"})
        self._events_stream = stream  # close() shuts its socket from another thread
        try:
            for event in stream:
                if stop.is_set():
                    break
                yield event
        finally:
            _close_stream(stream)


_EXIT = re.compile(r"^(\w+)(?: \((-?\d+)\))?")


def _status_key(summary: dict[str, Any]) -> str:
    """What must change for a container to be re-inspected: state, exit code, name."""
    match = _EXIT.match(summary.get("Status", ""))
    word = match.group(0) if match else ""
    return f"{summary.get('State', '')}|{word}|{','.join(summary.get('Names') or [])}"


def _split_ref(ref: str) -> tuple[str, str | None]:
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        return repo, digest
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"


def _close_stream(stream: object) -> None:
    close = getattr(stream, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # closing a half-read HTTP stream may raise; nothing to do
            _LOGGER.debug("closing docker stream failed", exc_info=True)
