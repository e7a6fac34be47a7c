"""Headless mesh rasteriser for pinhole cameras in the OpenCV convention (moderngl, EGL), many frames per draw.

Camera frame: x right, y down, z forward (optical axis); pixel (u, v) = (column, row) with integer
values at pixel centres, ``u = fx x/z + s y/z + cx``. One standalone OpenGL 3.3 context per process
through EGL: Mesa's llvmpipe on a CPU-only machine (Debian ``libegl1 libegl-mesa0 libgl1-mesa-dri``),
the NVIDIA driver on a GPU machine.

Per pixel the renderer writes, in one pass:

* ``depth``: camera-frame z [m] of the nearest surface (not the ray length), interpolated perspective
  correctly (exact for planar triangles), clipped to [0, background_depth]; pixels with no surface
  get ``background_depth`` (default 2.0 m, the paper's virtual RGB-D convention).
* ``rgb``: per-mesh colour times (ambient + (1 - ambient) |n . view|), a head-light Lambert model,
  two-sided; ``background_color`` where nothing is hit.
* ``mask``: int32 instance id, 0 = none, i + 1 = ``meshes[i]``.

Geometry nearer than ``near`` or farther than ``far`` is clipped away (not drawn, not in the mask).

Batching: the frames of a batch are stacked top to bottom in one tall framebuffer (frame f in rows
[f H, (f + 1) H)). Their meshes go up in one vertex buffer that carries each vertex's frame; one draw
call renders them all, each frame through its own camera (a row of a small float texture: pose and
projection, the principal point shifted down by f H) and clip planes that keep it inside its rows; one
read per output brings the whole batch back into (N, H, W) arrays without a copy. A single frame is a
batch of one. A batch holds as many frames as the GL size limits and ``ATLAS_PIXELS`` allow; longer
lists are drawn in several batches.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import numpy as np

_GL_CLIP_DISTANCE0 = 0x3000
NORMALS_ROW = 4096  # texels per row of the vertex-normal accumulator

_VERTEX_SHADER = """
#version 330
// Per frame f of a batch, row f of this texture: texels 0-3 = the columns of M (camera from world),
// 4-7 = the columns of P (OpenCV intrinsics -> clip space of the frame's rows of the framebuffer, see
// projection_matrix), 8 = (lo, hi) the frame's rows in normalised device y.
uniform sampler2D cameras;
uniform sampler2D normals;  // vertex i at texel (i % NORMALS_ROW, i / NORMALS_ROW): summed face normals
uniform bool have_normals;  // false: no smooth mesh in the batch, the accumulator was not drawn
in vec3 in_pos;
in vec3 in_color;
in ivec2 in_id_frame;       // (instance id, frame of the batch)
out vec3 v_cam;
out vec3 v_normal;          // zero: flat shading
out vec3 v_color;
flat out int v_id;
out float gl_ClipDistance[2];
void main() {
    int f = in_id_frame.y;
    mat4 M = mat4(texelFetch(cameras, ivec2(0, f), 0), texelFetch(cameras, ivec2(1, f), 0),
                  texelFetch(cameras, ivec2(2, f), 0), texelFetch(cameras, ivec2(3, f), 0));
    mat4 P = mat4(texelFetch(cameras, ivec2(4, f), 0), texelFetch(cameras, ivec2(5, f), 0),
                  texelFetch(cameras, ivec2(6, f), 0), texelFetch(cameras, ivec2(7, f), 0));
    vec2 rows = texelFetch(cameras, ivec2(8, f), 0).xy;
    vec3 n = have_normals ? texelFetch(normals, ivec2(gl_VertexID % NORMALS_ROW, gl_VertexID / NORMALS_ROW), 0).xyz
                    : vec3(0.0);
    float len_n = length(n);
    vec4 pc = M * vec4(in_pos, 1.0);
    v_cam = pc.xyz;
    v_normal = len_n > 0.0 ? mat3(M) * (n / len_n) : vec3(0.0);
    v_color = in_color;
    v_id = in_id_frame.x;
    gl_Position = P * pc;
    // nothing of frame f reaches its neighbours' rows: lo <= y_ndc <= hi
    gl_ClipDistance[0] = gl_Position.y - rows.x * gl_Position.w;
    gl_ClipDistance[1] = rows.y * gl_Position.w - gl_Position.y;
}
""".replace("NORMALS_ROW", str(NORMALS_ROW))

# Area-weighted vertex normals of the smooth meshes, summed on the device (additive blending): each
# triangle sends its face normal (length = twice its area) to the accumulator texel of each of its vertices.
_NORMALS_VS = """
#version 330
in vec3 in_pos;
out vec3 g_pos;
flat out int g_index;
void main() { g_pos = in_pos; g_index = gl_VertexID; gl_Position = vec4(0.0); }
"""
_NORMALS_GS = """
#version 330
layout(triangles) in;
layout(points, max_vertices = 3) out;
uniform vec2 size;  // accumulator texels (NORMALS_ROW, rows)
in vec3 g_pos[];
flat in int g_index[];
out vec3 a_normal;
void main() {
    vec3 n = cross(g_pos[1] - g_pos[0], g_pos[2] - g_pos[0]);
    for (int k = 0; k < 3; k++) {
        vec2 texel = vec2(g_index[k] % NORMALS_ROW, g_index[k] / NORMALS_ROW) + 0.5;
        gl_Position = vec4(2.0 * texel / size - 1.0, 0.0, 1.0);
        a_normal = n;
        EmitVertex();
        EndPrimitive();
    }
}
""".replace("NORMALS_ROW", str(NORMALS_ROW))
_NORMALS_FS = """
#version 330
in vec3 a_normal;
out vec4 f_sum;
void main() { f_sum = vec4(a_normal, 0.0); }
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


def _np(x, dtype=None) -> np.ndarray:
    """numpy view of an array or torch tensor (detached, on the CPU); ``dtype`` None keeps its type."""
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


@dataclass(eq=False)
class RenderOutput:
    """depth (..., H, W) float32 metres; rgb (..., H, W, 3) uint8; mask (..., H, W) int32 (0 = none,
    i+1 = meshes[i]); an output that was not asked for is None."""

    depth: np.ndarray | None
    rgb: np.ndarray | None
    mask: np.ndarray | None


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
    """Matrix taking OpenCV camera coordinates to GL clip space for a (height, width) image: K (..., 3, 3)
    -> (..., 4, 4) float64.

    Window x = u + 0.5 and window y = v + 0.5 (GL fragment centres sit at half-integers), so GL's
    bottom-up rows are the image's top-down rows and the framebuffer reads back without flipping.
    z_ndc is -1 at ``near`` and +1 at ``far``; w_clip = z.
    """
    K = np.asarray(K, np.float64)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be 3x3, got {K.shape}")
    fx, s, cx, fy, cy = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2], K[..., 1, 1], K[..., 1, 2]
    P = np.zeros(K.shape[:-2] + (4, 4))
    P[..., 0, 0], P[..., 0, 1], P[..., 0, 2] = 2 * fx / width, 2 * s / width, 2 * (cx + 0.5) / width - 1
    P[..., 1, 1], P[..., 1, 2] = 2 * fy / height, 2 * (cy + 0.5) / height - 1
    P[..., 2, 2], P[..., 2, 3] = (far + near) / (far - near), -2 * far * near / (far - near)
    P[..., 3, 2] = 1
    return P


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


ATLAS_PIXELS = 1 << 21  # most framebuffer pixels of one batch: measured best on an H100 at 1.6-2.5 M (32 frames of
# 224x224, 8 of 640x480; larger batches were slower), benchmarks/results/render_gpu.json
_OUTPUTS = ("depth", "rgb", "mask")


@dataclass(eq=False)
class Renderer:
    """Headless renderer of (height, width) frames: see the module docstring for the outputs.

    background_depth: depth [m] of pixels with no surface and upper clip of all depths;
    near, far: clipping planes [m] along z; background_color: RGB 0..255 where nothing is hit;
    ambient: ambient share of the shading (0..1); frames_per_draw: most frames of one batch (default:
    as many as the GL limits and ``ATLAS_PIXELS`` allow, see ``batch_capacity``); device_normals: sum
    the smooth meshes' vertex normals on the device (default: unless OpenGL is a software rasteriser,
    where numpy's ``vertex_normals`` is faster than its geometry shaders).
    """

    width: int
    height: int
    background_depth: float = 2.0
    near: float = 0.01
    far: float = 100.0
    background_color: tuple[int, int, int] = (0, 0, 0)
    ambient: float = 0.35
    frames_per_draw: int | None = None
    device_normals: bool | None = None
    _states: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if self.background_depth <= 0:
            raise ValueError(f"background_depth must be > 0, got {self.background_depth}")
        if self.frames_per_draw is not None and self.frames_per_draw < 1:
            raise ValueError(f"frames_per_draw must be >= 1, got {self.frames_per_draw}")

    # -- GL resources, made lazily per process and thread (a worker or thread gets its own)
    def _gl(self) -> dict:
        owner = _owner()
        if owner not in self._states:
            ctx = gl_context()
            info = ctx.info
            longest = min(info["GL_MAX_VIEWPORT_DIMS"][1], info["GL_MAX_RENDERBUFFER_SIZE"], info["GL_MAX_TEXTURE_SIZE"])
            if max(self.width, self.height) > longest:
                raise ValueError(f"image size {self.width}x{self.height} exceeds this OpenGL's limit ({longest})")
            capacity = max(1, min(longest // self.height, ATLAS_PIXELS // (self.width * self.height)))
            prog = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
            prog["cameras"].value, prog["normals"].value = 0, 1
            normals = ctx.program(vertex_shader=_NORMALS_VS, geometry_shader=_NORMALS_GS, fragment_shader=_NORMALS_FS)
            software = any(s in info["GL_RENDERER"].lower() for s in ("llvmpipe", "softpipe", "swrast"))
            self._states[owner] = {
                "ctx": ctx, "prog": prog, "normals_prog": normals, "bufs": {}, "longest": longest,
                "device_normals": not software if self.device_normals is None else self.device_normals,
                "capacity": min(capacity, self.frames_per_draw or capacity),
                "fbo": None, "tiles": 0, "acc": None, "acc_rows": 0,
            }
        return self._states[owner]

    @property
    def batch_capacity(self) -> int:
        """Most frames one draw renders here (GL limits, ``ATLAS_PIXELS``, ``frames_per_draw``)."""
        return self._gl()["capacity"]

    def _targets(self, st: dict, n: int):
        """The framebuffer (width, tiles * height) and camera texture (9, tiles) for n frames, grown by doubling."""
        if st["tiles"] < n:
            if st["fbo"] is not None:
                for obj in (*st["fbo"].color_attachments, st["fbo"].depth_attachment, st["fbo"], st["cameras"]):
                    obj.release()
            ctx, tiles = st["ctx"], min(st["capacity"], 1 << (n - 1).bit_length())
            size = (self.width, tiles * self.height)
            st["fbo"] = ctx.framebuffer(
                color_attachments=[
                    ctx.renderbuffer(size, 4, dtype="f1"),
                    ctx.renderbuffer(size, 1, dtype="f4"),
                    ctx.renderbuffer(size, 1, dtype="i4"),
                ],
                depth_attachment=ctx.depth_renderbuffer(size),
            )
            st["cameras"] = ctx.texture((9, tiles), 4, dtype="f4")
            st["cameras"].filter = (ctx.NEAREST, ctx.NEAREST)
            st["tiles"] = tiles
        return st["fbo"], st["cameras"]

    def _accumulator(self, st: dict, n_vertices: int):
        """Framebuffer over the (NORMALS_ROW, rows) float texture that sums vertex normals, grown by doubling."""
        rows = -(-n_vertices // NORMALS_ROW)
        if rows > st["longest"]:
            raise ValueError(f"{n_vertices} vertices in one batch exceed this OpenGL's limit; lower frames_per_draw")
        if st["acc_rows"] < rows:
            if st["acc"] is not None:
                st["acc"].color_attachments[0].release()
                st["acc"].release()
            st["acc_rows"] = min(st["longest"], 1 << (rows - 1).bit_length())
            tex = st["ctx"].texture((NORMALS_ROW, st["acc_rows"]), 4, dtype="f4")
            tex.filter = (st["ctx"].NEAREST, st["ctx"].NEAREST)
            st["acc"] = st["ctx"].framebuffer(color_attachments=[tex])
        return st["acc"], rows

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

    def render(self, K, meshes: list[Mesh], T_cam_from_world=None, outputs=_OUTPUTS) -> RenderOutput:
        """One frame (a batch of one). K (3, 3) pixels; meshes: list of Mesh; T_cam_from_world (4, 4) or
        None (= identity); outputs: which of "depth", "rgb", "mask" to read back (the others are None).

        Returns RenderOutput with depth (H, W), rgb (H, W, 3), mask (H, W).
        """
        K = _np(K, np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got {K.shape}")
        T = None if T_cam_from_world is None else _np(T_cam_from_world, np.float64)[None]
        out = self.render_batch(K[None], [meshes], T, outputs)
        return RenderOutput(*(None if a is None else a[0] for a in (out.depth, out.rgb, out.mask)))

    def render_batch(self, K, frames: list[list[Mesh]], T_cam_from_world=None, outputs=_OUTPUTS) -> RenderOutput:
        """Many frames: K (3, 3) or (N, 3, 3); frames: N lists of meshes; T_cam_from_world None,
        (4, 4) or (N, 4, 4); outputs: which of "depth", "rgb", "mask" to read back (the others are None;
        depth alone skips the shading's vertex normals). Returns RenderOutput with depth (N, H, W),
        rgb (N, H, W, 3), mask (N, H, W), equal to N calls of ``render`` up to float rounding (a pixel
        centre on a triangle edge may go either way).
        """
        n = len(frames)
        K = _np(K, np.float64)
        T = np.eye(4) if T_cam_from_world is None else _np(T_cam_from_world, np.float64)
        if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3):
            raise ValueError(f"K must be (3, 3) or (N, 3, 3), got {K.shape}")
        if T.shape[-2:] != (4, 4) or T.ndim not in (2, 3):
            raise ValueError(f"T_cam_from_world must be (4, 4) or (N, 4, 4), got {T.shape}")
        if (K.ndim == 3 and len(K) != n) or (T.ndim == 3 and len(T) != n):
            raise ValueError(f"render_batch: {n} frames but {len(K)} K and {len(T)} T_cam_from_world")
        unknown = set(outputs) - set(_OUTPUTS)
        if unknown:
            raise ValueError(f"outputs must be among {_OUTPUTS}, got {sorted(unknown)}")
        H, W = self.height, self.width
        out = RenderOutput(
            np.empty((n, H, W), np.float32) if "depth" in outputs else None,
            np.empty((n, H, W, 3), np.uint8) if "rgb" in outputs else None,
            np.empty((n, H, W), np.int32) if "mask" in outputs else None,
        )
        Ks, Ts = np.broadcast_to(K, (n, 3, 3)), np.broadcast_to(T, (n, 4, 4))
        step = self.batch_capacity
        for s in range(0, n, step):
            e = min(n, s + step)
            self._draw(Ks[s:e], frames[s:e], Ts[s:e], out, s)
        return out

    def _draw(self, Ks: np.ndarray, frames: list[list[Mesh]], Ts: np.ndarray, out: RenderOutput, first: int) -> None:
        """Draw frames (at most batch_capacity) in one call and read them into out[first:first + n]."""
        n, H, W = len(frames), self.height, self.width
        geometry = _pack(frames, first)
        st = self._gl()
        ctx, prog = st["ctx"], st["prog"]
        fbo, cameras = self._targets(st, n)
        # frame f: rows [f H, (f + 1) H) of a (n H, W) image = the principal point shifted down by f H
        shifted = Ks.copy()
        shifted[:, 1, 2] += H * np.arange(n)
        cam = np.zeros((n, 9, 4), np.float32)
        cam[:, 0:4] = Ts.transpose(0, 2, 1)  # GL matrices are column-major: texel j = column j
        cam[:, 4:8] = projection_matrix(shifted, W, n * H, self.near, self.far).transpose(0, 2, 1)
        cam[:, 8, 0] = 2 * np.arange(n) / n - 1
        cam[:, 8, 1] = 2 * np.arange(1, n + 1) / n - 1
        cameras.write(cam.tobytes(), viewport=(0, 0, 9, n))
        ctx.disable(ctx.CULL_FACE | ctx.BLEND | ctx.DEPTH_TEST)
        smooth = geometry is not None and out.rgb is not None and len(geometry[3]) > 0
        if smooth:  # the smooth meshes' vertex normals into the accumulator texture
            floats, _, _, smooth_faces = geometry
            acc, rows = self._accumulator(st, len(floats))
            if st["device_normals"]:  # each triangle adds its face normal to its vertices' texels
                acc.use()
                acc.viewport = (0, 0, NORMALS_ROW, rows)
                acc.clear(0.0, 0.0, 0.0, 0.0, viewport=acc.viewport)
                st["normals_prog"]["size"].value = (NORMALS_ROW, rows)
                ctx.enable(ctx.BLEND)
                ctx.blend_func = ctx.ONE, ctx.ONE
                vao = ctx.vertex_array(st["normals_prog"], [(self._buffer(st, "f", floats), "3f 12x", "in_pos")],
                                       index_buffer=self._buffer(st, "s", smooth_faces), index_element_size=4)
                vao.render(mode=ctx.TRIANGLES, vertices=smooth_faces.size)
                vao.release()
                ctx.disable(ctx.BLEND)
            else:
                normals = np.zeros((rows * NORMALS_ROW, 4), np.float32)
                normals[: len(floats), :3] = vertex_normals(floats[:, :3], smooth_faces)
                acc.color_attachments[0].write(normals, viewport=(0, 0, NORMALS_ROW, rows))
            acc.color_attachments[0].use(location=1)
        rows = (0, 0, W, n * H)
        fbo.use()
        fbo.viewport = rows
        ctx.enable(ctx.DEPTH_TEST)
        # clear each attachment to its own background: colour, depth [m], instance 0
        on, off = (True,) * 4, (False,) * 4
        fbo.color_mask = (on, off, off)
        fbo.clear(*(np.asarray(self.background_color, np.float64) / 255.0), 1.0, depth=1.0, viewport=rows)
        fbo.color_mask = (off, on, off)
        fbo.clear(float(self.background_depth), 0.0, 0.0, 0.0, viewport=rows)
        fbo.color_mask = (off, off, on)
        fbo.clear(0.0, 0.0, 0.0, 0.0, viewport=rows)  # an int attachment: 0.0 clears to the integer 0
        fbo.color_mask = (on, on, on)
        if geometry is not None:
            floats, ints, faces, _ = geometry
            prog["ambient"].value = float(self.ambient)
            prog["max_depth"].value = float(self.background_depth)
            prog["have_normals"].value = smooth
            cameras.use(location=0)
            vao = ctx.vertex_array(
                prog,
                [
                    (self._buffer(st, "f", floats), "3f 3f", "in_pos", "in_color"),
                    (self._buffer(st, "i", ints), "2i", "in_id_frame"),
                ],
                index_buffer=self._buffer(st, "e", faces),
                index_element_size=4,
            )
            ctx.enable_direct(_GL_CLIP_DISTANCE0)
            ctx.enable_direct(_GL_CLIP_DISTANCE0 + 1)
            vao.render(mode=ctx.TRIANGLES, vertices=faces.size)
            ctx.disable_direct(_GL_CLIP_DISTANCE0)
            ctx.disable_direct(_GL_CLIP_DISTANCE0 + 1)
            vao.release()
        sl = slice(first, first + n)
        if out.mask is not None:
            fbo.read_into(out.mask[sl], viewport=rows, components=1, attachment=2, dtype="i4")
        if out.depth is not None:
            fbo.read_into(out.depth[sl], viewport=rows, components=1, attachment=1, dtype="f4")
        if out.rgb is not None:
            fbo.read_into(out.rgb[sl], viewport=rows, components=3, attachment=0, dtype="f1")


def _pack(frames: list[list[Mesh]], first: int = 0):
    """All meshes of all frames in one vertex buffer: floats (V, 6) [position, colour], ints (V, 2)
    [instance id, frame], faces (F, 3) int32 and the faces of the smooth meshes (F', 3) int32; None
    when there is nothing to draw. ``first``: index of frames[0] in the caller's list (for errors)."""
    vs, fs, colors, keys, smooth = [], [], [], [], []
    for j, meshes in enumerate(frames):
        for i, m in enumerate(meshes):
            v, f = _np(m.vertices, np.float32), _np(m.faces)
            if v.ndim != 2 or v.shape[1] != 3:
                raise ValueError(f"frame {first + j}: Mesh.vertices must be (V, 3), got {v.shape}")
            if f.ndim != 2 or f.shape[1] != 3 or (f.size and f.dtype.kind not in "iu"):
                raise ValueError(f"frame {first + j}: Mesh.faces must be (F, 3) integers, got {f.dtype} {f.shape}")
            if not len(f):
                continue
            vs.append(v)
            fs.append(f)
            colors.append(m.color)
            keys.append((i + 1, j))
            smooth.append(m.smooth)
    if not fs:
        return None
    nv, nf = np.array([len(v) for v in vs]), np.array([len(f) for f in fs])
    color = np.asarray(colors, np.float32) if all(np.size(c) == 3 for c in colors) else None
    if color is None or color.shape != (len(vs), 3):
        k = next(k for k, c in enumerate(colors) if np.shape(np.asarray(c, np.float32)) not in ((3,), (1, 3)))
        raise ValueError(f"frame {first + keys[k][1]}: meshes[{keys[k][0] - 1}].color must be 3 numbers in 0..1, "
                         f"got {colors[k]}")
    faces = np.concatenate(fs).astype(np.int64, copy=False)
    if faces.min() < 0 or (faces >= np.repeat(nv, nf)[:, None]).any():
        k = next(k for k, f in enumerate(fs) if f.min() < 0 or f.max() >= nv[k])
        raise ValueError(f"frame {first + keys[k][1]}: meshes[{keys[k][0] - 1}]: Mesh.faces index outside "
                         f"0..{nv[k] - 1}")
    if nv.sum() >= 2**31:
        raise ValueError(f"{nv.sum()} vertices in one batch; lower frames_per_draw")
    start = np.cumsum(nv) - nv
    faces = (faces + np.repeat(start, nf)[:, None]).astype(np.int32)
    floats = np.empty((int(nv.sum()), 6), np.float32)
    floats[:, 0:3] = np.concatenate(vs)
    floats[:, 3:6] = np.repeat(color, nv, axis=0)
    ints = np.repeat(np.array(keys, np.int32), nv, axis=0)
    face_start = np.cumsum(nf) - nf
    smooth_faces = np.concatenate([faces[s:s + c] for s, c, sm in zip(face_start, nf, smooth) if sm] or
                                  [np.zeros((0, 3), np.int32)])
    return floats, ints, faces, smooth_faces
