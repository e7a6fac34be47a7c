"""Headless mesh rasteriser for pinhole cameras in the OpenCV convention (moderngl, EGL).

Camera frame: x right, y down, z forward (optical axis); pixel (u, v) = (column, row) with integer
values at pixel centres, ``u = fx x/z + s y/z + cx``. One standalone OpenGL 3.3 context per process
through EGL: Mesa's llvmpipe on a CPU-only machine (Debian ``libegl1 libegl-mesa0 libgl1-mesa-dri``),
the NVIDIA driver on a GPU machine.

Per pixel the renderer writes, in one pass of one draw call per frame (all meshes concatenated):

* ``depth``: camera-frame z [m] of the nearest surface (not the ray length), interpolated perspective
  correctly (exact for planar triangles), clipped to [0, background_depth]; pixels with no surface
  get ``background_depth`` (default 2.0 m, the paper's virtual RGB-D convention).
* ``rgb``: per-mesh colour times (ambient + (1 - ambient) |n . view|), a head-light Lambert model,
  two-sided; ``background_color`` where nothing is hit.
* ``mask``: int32 instance id, 0 = none, i + 1 = ``meshes[i]``.

Geometry nearer than ``near`` or farther than ``far`` is clipped away (not drawn, not in the mask).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np

_VERTEX_SHADER = """
#version 330
uniform mat4 P;       // OpenCV intrinsics -> clip space (see projection_matrix)
uniform mat4 M;       // camera from world
in vec3 in_pos;
in vec3 in_normal;    // zero for flat shading
in vec3 in_color;
in int in_id;
out vec3 v_cam;
out vec3 v_normal;
out vec3 v_color;
flat out int v_id;
void main() {
    vec4 pc = M * vec4(in_pos, 1.0);
    v_cam = pc.xyz;
    v_normal = mat3(M) * in_normal;
    v_color = in_color;
    v_id = in_id;
    gl_Position = P * pc;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform float ambient;
uniform float max_depth;  // background depth: the upper clip of the depth output
in vec3 v_cam;
in vec3 v_normal;
in vec3 v_color;
flat in int v_id;
layout(location = 0) out vec4 f_color;
layout(location = 1) out float f_depth;
layout(location = 2) out int f_id;
void main() {
    vec3 n = v_normal;
    if (dot(n, n) < 1e-12) n = cross(dFdx(v_cam), dFdy(v_cam));   // flat: face normal
    float len_n = length(n);
    float lambert = len_n > 0.0 ? abs(dot(n / len_n, normalize(-v_cam))) : 1.0;  // edge-on: unlit guard
    f_color = vec4(v_color * (ambient + (1.0 - ambient) * lambert), 1.0);
    f_depth = clamp(v_cam.z, 0.0, max_depth);
    f_id = v_id;
}
"""


def _np(x, dtype) -> np.ndarray:
    """numpy view of an array or torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


@dataclass(eq=False)
class Mesh:
    """A triangle mesh to draw.

    vertices: (V, 3) float metres, in the frame ``T_cam_from_world`` maps from (camera frame if None);
    faces: (F, 3) int vertex indices; color: (3,) RGB in 0..1; smooth: shade with area-weighted
    vertex normals (hands, spheres) instead of face normals (boxes, planes).
    """

    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[float, float, float] | np.ndarray = (0.7, 0.7, 0.7)
    smooth: bool = False

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Validated float32 vertices (V, 3) and int32 faces (F, 3)."""
        v, f = _np(self.vertices, np.float32), _np(self.faces, np.int64)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"Mesh.vertices must be (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"Mesh.faces must be (F, 3), got {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(f"Mesh.faces index outside 0..{len(v) - 1}")
        return v, f.astype(np.int32)


@dataclass(eq=False)
class RenderOutput:
    """depth (..., H, W) float32 metres; rgb (..., H, W, 3) uint8; mask (..., H, W) int32 (0 = none, i+1 = meshes[i])."""

    depth: np.ndarray
    rgb: np.ndarray
    mask: np.ndarray


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals: v (V, 3), f (F, 3) -> (V, 3) float32."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # |fn| = 2 * area
    n = np.zeros((len(v), 3), np.float64)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(f[:, k], weights=fn[:, c], minlength=len(v))
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return n.astype(np.float32)


def projection_matrix(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """4x4 matrix taking OpenCV camera coordinates to GL clip space for a (height, width) image.

    Window x = u + 0.5 and window y = v + 0.5 (GL fragment centres sit at half-integers), so GL's
    bottom-up rows are the image's top-down rows and the framebuffer reads back without flipping.
    z_ndc is -1 at ``near`` and +1 at ``far``; w_clip = z.
    """
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got {K.shape}")
    fx, s, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    return np.array(
        [
            [2 * fx / width, 2 * s / width, 2 * (cx + 0.5) / width - 1, 0],
            [0, 2 * fy / height, 2 * (cy + 0.5) / height - 1, 0],
            [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, 1, 0],
        ]
    )


_CONTEXTS: dict[tuple[int, int], object] = {}


def _owner() -> tuple[int, int]:
    """(process, thread): a GL context is current in one thread and does not survive a fork."""
    return os.getpid(), threading.get_ident()


def gl_context():
    """This thread's headless moderngl context (EGL first, then the platform default), made once."""
    import moderngl

    pid = _owner()
    if pid not in _CONTEXTS:
        if any(p != pid[0] for p, _ in _CONTEXTS):
            raise RuntimeError(
                "megohand.render: this process was forked from one that had already made an OpenGL context; "
                "Mesa cannot make another one here (it hangs). Start workers with the 'spawn' or 'forkserver' "
                "multiprocessing method, or render only in the workers."
            )
        errors = []
        for kwargs in ({"backend": "egl"}, {}):
            try:
                _CONTEXTS[pid] = moderngl.create_standalone_context(require=330, **kwargs)
                break
            except Exception as e:  # noqa: BLE001 - try the next backend, report all at the end
                errors.append(f"{kwargs or 'default'}: {e}")
        else:
            raise RuntimeError(
                "no headless OpenGL 3.3 context: " + "; ".join(errors) + ". On Debian/Ubuntu install "
                "'libegl1 libegl-mesa0 libgl1-mesa-dri' (CPU, Mesa llvmpipe); with an NVIDIA driver whose EGL "
                "library (libEGL_nvidia.so.0) is present but not libEGL.so/libGL.so, install the GL vendor-neutral "
                "dispatch libraries 'libegl1 libgl1' (libglvnd), or put their .so files on LD_LIBRARY_PATH."
            )
    return _CONTEXTS[pid]


@dataclass(eq=False)
class Renderer:
    """Headless renderer of (height, width) frames: see the module docstring for the outputs.

    background_depth: depth [m] of pixels with no surface and upper clip of all depths;
    near, far: clipping planes [m] along z; background_color: RGB 0..255 where nothing is hit;
    ambient: ambient share of the shading (0..1).
    """

    width: int
    height: int
    background_depth: float = 2.0
    near: float = 0.01
    far: float = 100.0
    background_color: tuple[int, int, int] = (0, 0, 0)
    ambient: float = 0.35
    _states: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if self.background_depth <= 0:
            raise ValueError(f"background_depth must be > 0, got {self.background_depth}")

    # -- GL resources, made lazily per process and thread (a worker or thread gets its own)
    def _gl(self) -> dict:
        owner = _owner()
        if owner not in self._states:
            ctx = gl_context()
            size = (self.width, self.height)
            fbo = ctx.framebuffer(
                color_attachments=[
                    ctx.renderbuffer(size, 4, dtype="f1"),
                    ctx.renderbuffer(size, 1, dtype="f4"),
                    ctx.renderbuffer(size, 1, dtype="i4"),
                ],
                depth_attachment=ctx.depth_renderbuffer(size),
            )
            prog = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
            self._states[owner] = {"ctx": ctx, "fbo": fbo, "prog": prog, "bufs": {}}
        return self._states[owner]

    @staticmethod
    def _buffer(st: dict, name: str, data: np.ndarray):
        """Upload into a reusable GL buffer of state ``st`` that grows by doubling."""
        buf = st["bufs"].get(name)
        if buf is None or buf.size < data.nbytes:
            if buf is not None:
                buf.release()
            buf = st["ctx"].buffer(reserve=max(2 * data.nbytes, 1024))
            st["bufs"][name] = buf
        buf.write(data)
        return buf

    def render(self, K, meshes: list[Mesh], T_cam_from_world=None) -> RenderOutput:
        """One frame. K (3, 3) pixels; meshes: list of Mesh; T_cam_from_world (4, 4) or None (= identity).

        Returns RenderOutput with depth (H, W), rgb (H, W, 3), mask (H, W).
        """
        out = RenderOutput(
            np.empty((self.height, self.width), np.float32),
            np.empty((self.height, self.width, 3), np.uint8),
            np.empty((self.height, self.width), np.int32),
        )
        self._render_into(K, meshes, T_cam_from_world, out.depth, out.rgb, out.mask)
        return out

    def render_batch(self, K, frames: list[list[Mesh]], T_cam_from_world=None) -> RenderOutput:
        """Many frames: K (3, 3) or (N, 3, 3); frames: N lists of meshes; T_cam_from_world None,
        (4, 4) or (N, 4, 4). Returns RenderOutput with depth (N, H, W), rgb (N, H, W, 3), mask (N, H, W).
        """
        n = len(frames)
        K = _np(K, np.float64)
        Ks = np.broadcast_to(K, (n, 3, 3)) if K.ndim == 2 else K
        if T_cam_from_world is None:
            Ts = [None] * n
        else:
            T = _np(T_cam_from_world, np.float64)
            Ts = np.broadcast_to(T, (n, 4, 4)) if T.ndim == 2 else T
        if len(Ks) != n or len(Ts) != n:
            raise ValueError(f"render_batch: {n} frames but {len(Ks)} K and {len(Ts)} T_cam_from_world")
        out = RenderOutput(
            np.empty((n, self.height, self.width), np.float32),
            np.empty((n, self.height, self.width, 3), np.uint8),
            np.empty((n, self.height, self.width), np.int32),
        )
        for i in range(n):
            self._render_into(Ks[i], frames[i], Ts[i], out.depth[i], out.rgb[i], out.mask[i])
        return out

    def _render_into(self, K, meshes, T_cam_from_world, depth, rgb, mask) -> None:
        """Draw one frame and read it back into the contiguous arrays depth (H, W), rgb (H, W, 3), mask (H, W)."""
        P = projection_matrix(_np(K, np.float64), self.width, self.height, self.near, self.far)
        M = np.eye(4) if T_cam_from_world is None else _np(T_cam_from_world, np.float64)
        if M.shape != (4, 4):
            raise ValueError(f"T_cam_from_world must be 4x4, got {M.shape}")
        geometry = self._pack(meshes)
        st = self._gl()
        ctx, fbo, prog = st["ctx"], st["fbo"], st["prog"]
        fbo.use()
        fbo.viewport = (0, 0, self.width, self.height)
        ctx.enable(ctx.DEPTH_TEST)
        ctx.disable(ctx.CULL_FACE | ctx.BLEND)
        # clear each attachment to its own background: colour, depth [m], instance 0
        on, off = (True,) * 4, (False,) * 4
        fbo.color_mask = (on, off, off)
        fbo.clear(*(np.asarray(self.background_color, np.float64) / 255.0), 1.0, depth=1.0)
        fbo.color_mask = (off, on, off)
        fbo.clear(float(self.background_depth), 0.0, 0.0, 0.0)
        fbo.color_mask = (off, off, on)
        fbo.clear(0.0, 0.0, 0.0, 0.0)  # an int attachment: 0.0 clears to the integer 0
        fbo.color_mask = (on, on, on)
        if geometry is not None:
            floats, ids, faces = geometry
            prog["P"].write(P.T.astype("f4").tobytes())  # GL matrices are column-major
            prog["M"].write(M.T.astype("f4").tobytes())
            prog["ambient"].value = float(self.ambient)
            prog["max_depth"].value = float(self.background_depth)
            vao = ctx.vertex_array(
                prog,
                [
                    (self._buffer(st, "f", floats), "3f 3f 3f", "in_pos", "in_normal", "in_color"),
                    (self._buffer(st, "i", ids), "i", "in_id"),
                ],
                index_buffer=self._buffer(st, "e", faces),
                index_element_size=4,
            )
            vao.render(mode=ctx.TRIANGLES, vertices=faces.size)
            vao.release()
        fbo.read_into(mask, components=1, attachment=2, dtype="i4")
        fbo.read_into(depth, components=1, attachment=1, dtype="f4")
        fbo.read_into(rgb, components=3, attachment=0, dtype="f1")

    @staticmethod
    def _pack(meshes: list[Mesh]):
        """Concatenate meshes: per-vertex [pos, normal, colour] floats (V, 9), ids (V,), faces (F, 3)."""
        floats, ids, faces, offset = [], [], [], 0
        for i, m in enumerate(meshes):
            v, f = m.arrays()
            if not len(f):
                continue
            color = _np(m.color, np.float32).reshape(-1)
            if color.shape != (3,):
                raise ValueError(f"meshes[{i}].color must be 3 numbers in 0..1, got {m.color}")
            n = vertex_normals(v, f) if m.smooth else np.zeros_like(v)
            floats.append(np.concatenate([v, n, np.broadcast_to(color, v.shape)], axis=1))
            ids.append(np.full(len(v), i + 1, np.int32))
            faces.append(f + offset)
            offset += len(v)
        if not faces:
            return None
        return (
            np.ascontiguousarray(np.concatenate(floats), np.float32),
            np.concatenate(ids),
            np.ascontiguousarray(np.concatenate(faces), np.int32),
        )
