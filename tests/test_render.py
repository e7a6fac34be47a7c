"""Renderer against analytic ray casts (sphere, box), exact pixel-centre rasterisation of projected
triangles (megohand.geometry.camera.project_points), and hand-computed shading."""

import numpy as np
import pytest
import roma
import torch

from megohand.geometry.camera import project_points
from megohand.render import Mesh, RenderOutput, Renderer
from megohand.render.overlay import blend, colorize_depth, overlay_hand, overlay_meshes
from megohand.render.primitives import box, cylinder, uv_sphere

W, H = 256, 256
K = np.array([[220.0, 0.0, 127.5], [0.0, 220.0, 127.5], [0.0, 0.0, 1.0]])


def _rays(K, W, H):
    """Camera-frame ray directions with z = 1 through every pixel centre: (H, W, 3)."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    return np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T


@pytest.fixture(scope="module")
def renderer():
    return Renderer(W, H)


def test_sphere_depth_matches_analytic(renderer):
    c, r = np.array([0.02, -0.01, 0.5]), 0.1
    v, f = uv_sphere(r, 64, 128)
    out = renderer.render(K, [Mesh(v + c, f, (0.2, 0.6, 0.9), smooth=True)])
    d = _rays(K, W, H)
    a, b, cc = (d * d).sum(-1), -2 * d @ c, c @ c - r * r
    disc = b * b - 4 * a * cc
    hit = disc > 0
    z = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)  # ray parameter = z since d_z = 1
    both = hit & (out.mask == 1)
    assert both.sum() > 0.95 * hit.sum() > 5000
    # the inscribed polygon silhouette differs from the true disc only at boundary pixels
    assert np.logical_xor(hit, out.mask == 1).sum() < 0.02 * hit.sum()
    err = np.abs(out.depth[both] - z[both])
    assert err.mean() < 1e-3 and err.mean() < 2e-4  # tessellation sag of a 64x128 UV sphere ~ 3e-5 m
    assert (out.depth[~(out.mask > 0)] == 2.0).all()
    # the projected pixel of every vertex on the visible half lands on the silhouette
    front = v[:, 2] < 0
    uv = project_points(torch.tensor(v[front] + c), torch.tensor(K)).numpy().round().astype(int)
    m = np.pad(out.mask == 1, 1)
    near = np.max([m[1 + dv : 1 + dv + H, 1 + du : 1 + du + W] for dv in (-1, 0, 1) for du in (-1, 0, 1)], 0)
    assert near[uv[:, 1], uv[:, 0]].all()  # within one pixel of a drawn pixel, also on the rim
    inner = v[front][:, 2] < -0.5 * r  # well inside the silhouette: exactly on a drawn pixel
    assert (out.mask[uv[inner, 1], uv[inner, 0]] == 1).all()
    assert out.depth.dtype == np.float32 and out.mask.dtype == np.int32 and out.rgb.dtype == np.uint8
    assert out.depth.shape == (H, W) and out.rgb.shape == (H, W, 3)


def test_box_depth_matches_analytic_with_pose(renderer):
    size = np.array([0.12, 0.08, 0.2])
    v, f = box(size)  # the box frame is the "world"
    R = roma.rotvec_to_rotmat(torch.tensor([0.4, -0.7, 0.3], dtype=torch.float64)).numpy()
    t = np.array([-0.03, 0.02, 0.5])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    out = renderer.render(K, [Mesh(v, f, (1, 0, 0))], T_cam_from_world=T)
    # slab ray cast in the box frame: camera centre o = R^T (0 - t), direction R^T d
    d = _rays(K, W, H) @ R  # (R^T d) for row vectors
    o = -R.T @ t
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-size / 2 - o) / d, (size / 2 - o) / d
    tn, tf = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    hit = (tn <= tf) & (tf > 0)
    both = hit & (out.mask == 1)
    assert np.logical_xor(hit, out.mask == 1).sum() < 0.01 * hit.sum()
    err = np.abs(out.depth[both] - tn[both])
    assert err.mean() < 1e-3 and err.max() < 1e-4  # planar faces: exact up to float32


def _point_in_triangles(p, tri):
    """p (N, 2) pixel centres, tri (3, 2) -> (inside (N,), min distance to an edge line (N,))."""
    s, dist = [], []
    for i in range(3):
        a, b = tri[i], tri[(i + 1) % 3]
        e = b - a
        cross = e[0] * (p[:, 1] - a[1]) - e[1] * (p[:, 0] - a[0])
        s.append(cross)
        dist.append(np.abs(cross) / np.linalg.norm(e))
    s = np.stack(s, -1)
    return (s > 0).all(-1) | (s < 0).all(-1), np.min(dist, 0)


@pytest.mark.parametrize("skew", [0.0, 15.0])
def test_silhouette_matches_project_points(skew):
    """Every pixel centre inside the projected triangle is drawn, every one outside is not."""
    w, h = 160, 120  # non-square image, off-centre principal point, fx != fy
    Kc = np.array([[150.0, skew, 70.3], [0.0, 170.0, 66.8], [0.0, 0.0, 1.0]])
    X = np.array([[-0.1, -0.08, 0.5], [0.12, -0.05, 0.6], [0.0, 0.1, 0.45]], np.float32)
    uv = project_points(torch.tensor(X, dtype=torch.float64), torch.tensor(Kc)).numpy()
    out = Renderer(w, h).render(Kc, [Mesh(X, np.array([[0, 1, 2]]), (0, 1, 0))])
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    inside, dist = _point_in_triangles(np.stack([u.ravel(), v.ravel()], -1).astype(np.float64), uv)
    clear = dist > 1e-3  # pixel centres exactly on an edge follow GL's tie rule
    drawn = out.mask.ravel() == 1
    assert inside.sum() > 200
    np.testing.assert_array_equal(drawn[clear], inside[clear])


def test_masks_occlusion_and_ids(renderer):
    v, f = box((0.1, 0.1, 0.1))
    near = Mesh(v + [0.03, 0, 0.4], f, (1, 0, 0))
    far = Mesh(v + [-0.03, 0, 0.6], f, (0, 0, 1))
    other = Mesh(v + [0.0, 0.2, 0.5], f, (0, 1, 0))
    for order in ([near, far, other], [far, near, other]):  # the z-test, not the draw order, decides
        out = renderer.render(K, order)
        i_near, i_far = order.index(near) + 1, order.index(far) + 1
        assert set(np.unique(out.mask)) == {0, 1, 2, 3}
        # the centre of the near box is in front of the far box
        uc, vc = project_points(torch.tensor([[0.03, 0.0, 0.35]], dtype=torch.float64), torch.tensor(K))[0].round().int().tolist()
        assert out.mask[vc, uc] == i_near and out.depth[vc, uc] == pytest.approx(0.35, abs=1e-5)
        # the far box's visible part has its own id and depth
        uf, vf = project_points(torch.tensor([[-0.07, 0.0, 0.55]], dtype=torch.float64), torch.tensor(K))[0].round().int().tolist()
        assert out.mask[vf, uf] == i_far and out.depth[vf, uf] == pytest.approx(0.55, abs=1e-5)
        # rgb follows the mask: red where the red box is seen (almost) head-on
        np.testing.assert_allclose(out.rgb[vc, uc], [255, 0, 0], atol=2)
    empty = renderer.render(K, [])
    assert (empty.mask == 0).all() and (empty.depth == 2.0).all() and (empty.rgb == 0).all()


def test_background_value_and_depth_clip():
    v, f = box((0.4, 0.4, 0.01))
    r = Renderer(64, 48, background_depth=1.5, background_color=(10, 20, 30))
    Ks = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    out = r.render(Ks, [Mesh(v + [0, 0, 1.0], f)])
    assert (out.depth[out.mask == 0] == 1.5).all() and (out.rgb[out.mask == 0] == [10, 20, 30]).all()
    assert out.depth[out.mask == 1] == pytest.approx(0.995, abs=1e-5)
    far = r.render(Ks, [Mesh(v + [0, 0, 3.0], f)])  # beyond the background depth, within far
    assert (far.mask == 1).sum() > 0 and (far.depth == 1.5).all()


def test_near_far_clipping():
    v, f = box((0.5, 0.5, 0.001))
    Ks = np.array([[50.0, 0, 31.5], [0, 50.0, 31.5], [0, 0, 1]])
    r = Renderer(64, 64, near=0.05, far=1.0)
    assert (r.render(Ks, [Mesh(v + [0, 0, 0.03], f)]).mask == 0).all()  # in front of near
    assert (r.render(Ks, [Mesh(v + [0, 0, 1.2], f)]).mask == 0).all()  # behind far
    assert (r.render(Ks, [Mesh(v + [0, 0, 0.6], f)]).mask == 1).any()
    # a plane tilted through the near plane is cut there: every drawn depth is >= near
    R = roma.rotvec_to_rotmat(torch.tensor([1.2, 0.0, 0.0])).numpy()
    out = r.render(Ks, [Mesh((v * 4) @ R.T + [0, 0, 0.2], f)])
    drawn = out.depth[out.mask == 1]
    assert drawn.size > 100 and drawn.min() >= 0.05 - 1e-4
    assert out.mask.sum() < 64 * 64  # part of the plane was clipped away
    behind = r.render(Ks, [Mesh(v + [0, 0, -0.5], f)])  # behind the camera
    assert (behind.mask == 0).all()


def test_lambert_shading_hand_computed():
    """Flat plane at angle a to the view ray through its centre: colour = c (amb + (1 - amb) cos a)."""
    v, f = box((0.3, 0.3, 0.0001))
    r = Renderer(33, 33, ambient=0.25)
    Ks = np.array([[400.0, 0, 16], [0, 400.0, 16], [0, 0, 1]])
    for angle in (0.0, 0.5, 1.0):
        R = roma.rotvec_to_rotmat(torch.tensor([0.0, angle, 0.0])).numpy()
        out = r.render(Ks, [Mesh(v @ R.T + [0, 0, 1.0], f, (0.8, 0.4, 1.0))])
        expect = np.array([0.8, 0.4, 1.0]) * (0.25 + 0.75 * np.cos(angle)) * 255
        np.testing.assert_allclose(out.rgb[16, 16], expect, atol=1.5)


def _assert_same_up_to_ties(batch, i, single, where=""):
    """Frame i of a batch against a single render: masks equal except at pixel centres on an edge (a pixel
    whose 3x3 neighbourhood in the single render has another id; at most 1e-3 of all pixels); where they
    agree, depth within 1 um plus what a shift of the surface by 1/100 pixel makes (the largest depth step
    to a neighbour of the same id; GPUs snap vertices to 1/256 pixel), rgb within 1 level but at ties of
    two faces (at most 1e-3 of all pixels)."""
    H_, W_ = single.mask.shape
    d, m = np.pad(single.depth, 1, mode="edge"), np.pad(single.mask, 1, mode="edge")
    nb = [(slice(1 + a, 1 + a + H_), slice(1 + b, 1 + b + W_)) for a in (-1, 0, 1) for b in (-1, 0, 1)]
    edge = np.any([m[s] != single.mask for s in nb], 0)
    slope = np.max([np.where(m[s] == single.mask, np.abs(d[s] - single.depth), 0) for s in nb], 0)
    differ = batch.mask[i] != single.mask
    assert differ.sum() <= 1e-3 * differ.size + 1 and edge[differ].all(), where
    same = ~differ
    err = np.abs(batch.depth[i] - single.depth)[same]
    assert (err <= 1e-6 + 1e-2 * slope[same]).all(), f"{where}: depth differs by up to {err.max():.2e} m"
    off = (np.abs(batch.rgb[i][same].astype(int) - single.rgb[same]) > 1).any(-1)  # a tie of two faces
    assert off.sum() <= 1e-3 * differ.size + 1, where


@pytest.mark.parametrize("device_normals", [False, True])
def test_smooth_shading_matches_analytic_sphere(device_normals):
    """Smooth shading (vertex normals summed on the device) of a fine sphere: colour = c (amb + (1 - amb)
    |n . view|) with n the true sphere normal at the ray hit; a flat box in the same frames stays flat. The
    vertex normals summed by numpy and on the device (a geometry shader's points, added by blending)."""
    w = h = 96
    Ks = np.array([[120.0, 0, 47.5], [0, 120.0, 47.5], [0, 0, 1]])
    c, rad, col = np.array([0.0, 0.0, 0.6]), 0.15, np.array([0.9, 0.6, 0.3])
    vs, fs = uv_sphere(rad, 96, 192)
    vb, fb = box((0.05, 0.05, 0.05))
    frame = [Mesh(vs + c, fs, col, smooth=True), Mesh(vb + [0.09, 0.09, 0.4], fb, (1, 1, 1))]
    out = Renderer(w, h, ambient=0.3, device_normals=device_normals).render_batch(Ks, [frame, [], frame])
    d = _rays(Ks, w, h)
    a, b, cc = (d * d).sum(-1), -2 * d @ c, c @ c - rad * rad
    disc = b * b - 4 * a * cc
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    p = d * t[..., None]
    n = (p - c) / rad
    view = -p / np.linalg.norm(p, axis=-1, keepdims=True)
    expect = col * (0.3 + 0.7 * np.abs((n * view).sum(-1)))[..., None] * 255
    inner = (disc > 0.002 * b * b) & (out.mask[0] == 1)  # away from the rim, where the polygon's outline differs
    assert inner.sum() > 2000, inner.sum()
    assert np.abs(out.rgb[0][inner] - expect[inner]).max() <= 2.0
    _assert_same_up_to_ties(out, 2, RenderOutput(out.depth[0], out.rgb[0], out.mask[0]))
    front = (out.mask[0] == 2) & (np.abs(out.depth[0] - 0.375) < 1e-5)  # the box's face at z = 0.375, normal -z
    flat = 255 * (0.3 + 0.7 * 0.375 / np.linalg.norm(d * 0.375, axis=-1))
    assert front.sum() > 20 and np.abs(out.rgb[0][front] - flat[front][:, None]).max() <= 1.5
    assert (out.rgb[1] == 0).all()


def test_render_batch_equals_single_frames():
    """Batched frames (several draws and one draw; per-frame K and pose; meshes reaching far outside the
    view) equal one-frame-at-a-time renders; nothing of a frame leaks into its neighbours' rows."""
    w, h = 96, 71  # odd: the frames of a batch start on rows of both parities
    vs, fs = uv_sphere(0.05, 16, 32)
    vc, fc = cylinder(0.03, 0.1, 24)
    vb, fb = box((20.0, 20.0, 0.01))  # a wall far larger than any view
    rng = np.random.default_rng(0)
    frames, Ks, Ts = [], [], []
    for i in range(11):
        Ki = np.array([[80.0 + 5 * i, 3.0 * (i % 2), 47.5 + i], [0, 85.0, 35.5 - i], [0, 0, 1]])
        Ti = np.eye(4)
        Ti[:3, :3] = roma.rotvec_to_rotmat(torch.tensor(rng.normal(0, 0.1, 3))).numpy()
        Ti[:3, 3] = rng.normal(0, 0.02, 3)
        meshes = [
            Mesh(torch.tensor(vs) + torch.tensor([0.02 * i - 0.1, 0.01, 0.4]), torch.tensor(fs), (1, 0, 0), smooth=True),
            Mesh(vc + [-0.05, 0.06 * (i % 3 - 1), 0.5], fc, (0, 0, 1)),
        ]
        if i % 3 == 1:
            meshes.append(Mesh(vb + [0, 0, 0.7], fb, (0, 1, 0)))
        frames.append([] if i % 3 == 2 or i == 0 else meshes)
        Ks.append(Ki)
        Ts.append(Ti)
    Ks, Ts = np.stack(Ks), np.stack(Ts)
    for per_draw in (None, 4):
        r = Renderer(w, h, frames_per_draw=per_draw)
        out = r.render_batch(Ks, frames, Ts)
        assert out.depth.shape == (11, h, w) and out.rgb.shape == (11, h, w, 3) and out.mask.shape == (11, h, w)
        for i, meshes in enumerate(frames):
            _assert_same_up_to_ties(out, i, r.render(Ks[i], meshes, Ts[i]), where=f"frame {i}, frames_per_draw={per_draw}")
            if not meshes:  # the wall of the frames beside it stays in their rows
                assert (out.mask[i] == 0).all() and (out.depth[i] == 2.0).all()
        assert set(np.unique(out.mask[1])) == {1, 2, 3} and set(np.unique(out.mask[3])) == {0, 1, 2}
    depth_only = r.render_batch(Ks, frames, Ts, outputs=("depth",))
    assert depth_only.rgb is None and depth_only.mask is None
    np.testing.assert_array_equal(depth_only.depth, out.depth)
    with pytest.raises(ValueError, match="frames"):
        r.render_batch(np.stack([K, K]), frames)
    with pytest.raises(ValueError, match="outputs"):
        r.render_batch(K, frames, outputs=("normals",))


def test_render_batch_planes_hand_computed():
    """Batched planes at known poses: depth [m] = camera z of the plane at each pixel centre, exactly where
    a hand-computed pinhole projection (OpenCV: u right, v down) puts them; per-frame K and T_cam_from_world."""
    w, h = 64, 48
    v, f = box((0.2, 0.1, 0.0))  # a 0.2 x 0.1 m rectangle in the plane z = 0 of its frame (two faces overlap)
    Ks = np.array([[[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]], [[90.0, 0, 30.0], [0, 80.0, 20.0], [0, 0, 1]],
                   [[70.0, 0, 31.5], [0, 70.0, 23.5], [0, 0, 1]]])
    Ts = np.repeat(np.eye(4)[None], 3, 0)
    Ts[0, :3, 3] = [0.0, 0.0, 0.8]      # fronto-parallel at 0.8 m, centred
    Ts[1, :3, 3] = [0.05, 0.03, 1.25]   # right of and below the optical axis
    a = 0.6                             # turned about the camera's y axis: z = 1.0 - tan(a) x
    Ts[2, :3, :3] = roma.rotvec_to_rotmat(torch.tensor([0.0, a, 0.0], dtype=torch.float64)).numpy()
    Ts[2, :3, 3] = [0.0, 0.0, 1.0]
    out = Renderer(w, h, frames_per_draw=2).render_batch(Ks, [[Mesh(v, f)]] * 3, Ts)
    u, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    for i in range(3):
        (fx, s, cx), (_, fy, cy) = Ks[i][0], Ks[i][1]
        x, y = (u - cx) / fx, (vv - cy) / fy  # ray through each pixel centre, z = 1
        if i < 2:
            z = np.full_like(u, Ts[i][2, 3])
            X, Y = x * z - Ts[i][0, 3], y * z - Ts[i][1, 3]  # point on the plane, in the rectangle's frame
        else:
            z = 1.0 / (1.0 + np.tan(a) * x)  # the ray z (x, y, 1) meets the plane z = 1 - tan(a) x_cam
            X, Y = x * z / np.cos(a), y * z
        inside = (np.abs(X) < 0.1) & (np.abs(Y) < 0.05)
        clear = (np.abs(np.abs(X) - 0.1) > 1e-3) & (np.abs(np.abs(Y) - 0.05) > 1e-3)  # >= 0.05 px off an edge
        np.testing.assert_array_equal(out.mask[i][clear], inside[clear].astype(np.int32), err_msg=f"frame {i}")
        np.testing.assert_allclose(out.depth[i][inside & clear], z[inside & clear], rtol=0, atol=5e-5)
        assert (out.depth[i][~inside & clear] == 2.0).all()
    # frame 1 sits right of and below the principal point: u in 30 + 90 (0.05 +- 0.1) / 1.25 = (26.4, 40.8),
    # v in 20 + 80 (0.03 +- 0.05) / 1.25 = (18.72, 25.12)
    cols, rows = np.flatnonzero(out.mask[1].any(0)), np.flatnonzero(out.mask[1].any(1))
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (27, 40, 19, 25)


def test_bad_input():
    r = Renderer(8, 8)
    with pytest.raises(ValueError, match="faces index"):
        r.render(K, [Mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]))])
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        r.render(K, [Mesh(np.zeros((3, 2)), np.array([[0, 1, 2]]))])
    with pytest.raises(ValueError, match="3x3"):
        r.render(np.eye(4), [])
    with pytest.raises(ValueError, match="near"):
        Renderer(8, 8, near=0.0)


def test_overlay_blends_only_inside_mask():
    img = np.full((H, W, 3), 100, np.uint8)
    v, f = uv_sphere(0.08, 24, 48)
    out = overlay_meshes(img, K, [Mesh(v + [0, 0, 0.5], f, (1, 1, 1))], alpha=0.5)
    rendered = Renderer(W, H).render(K, [Mesh(v + [0, 0, 0.5], f, (1, 1, 1))])
    inside = rendered.mask > 0
    assert (out[~inside] == 100).all()
    np.testing.assert_allclose(out[inside], 0.5 * 100 + 0.5 * rendered.rgb[inside].astype(float), atol=1)
    hand = overlay_hand(img, K, torch.tensor(v) + torch.tensor([0.0, 0, 0.5]), torch.tensor(f), alpha=1.0)
    assert (hand[inside] != 100).any() and (hand[~inside] == 100).all()
    with pytest.raises(ValueError, match="uint8"):
        blend(img.astype(np.float32), rendered.rgb, rendered.mask)
    col = colorize_depth(np.array([[0.0, 2.0, 5.0]]))
    assert col.shape == (1, 3, 3) and col[0, 0].sum() > col[0, 1].sum() and (col[0, 1] == col[0, 2]).all()


def test_overlay_batch_equals_overlay_meshes():
    from megohand.render.overlay import overlay_batch

    v, f = uv_sphere(0.05, 16, 32)
    imgs = [np.full((48, 64, 3), 30 * i, np.uint8) for i in range(5)]
    Ks = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    frames = [[Mesh(v + [0.02 * i - 0.04, 0, 0.4], f, (1, 0.5, 0))] if i != 2 else [] for i in range(5)]
    out = overlay_batch(imgs, Ks, frames, alpha=0.5, chunk=2)
    for img, meshes, o in zip(imgs, frames, out):
        one = overlay_meshes(img, Ks, meshes, alpha=0.5)
        assert (np.abs(o.astype(int) - one).max(-1) > 1).mean() < 1e-3  # ties at the silhouette only
    np.testing.assert_array_equal(out[2], imgs[2])
    with pytest.raises(ValueError, match="frames of meshes"):
        overlay_batch(imgs, Ks, frames[:3])


def test_fork_after_context_gives_clear_error():
    """Mesa hangs making a context in a child forked after the parent made one: we raise instead."""
    import os

    Renderer(8, 8).render(K, [])  # the parent has a context now
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            Renderer(8, 8).render(K, [])
            msg = b"no error"
        except RuntimeError as e:
            msg = str(e).encode()
        os.write(wfd, msg[:500])
        os._exit(0)
    os.close(wfd)
    _, status = os.waitpid(pid, 0)
    msg = os.read(rfd, 500).decode()
    os.close(rfd)
    assert "forked" in msg and "spawn" in msg


def test_render_from_other_threads():
    from concurrent.futures import ThreadPoolExecutor

    v, f = box((0.1, 0.1, 0.1))
    r = Renderer(32, 32)
    Ks = np.array([[60.0, 0, 15.5], [0, 60.0, 15.5], [0, 0, 1]])
    ref = r.render(Ks, [Mesh(v + [0, 0, 0.5], f)])
    with ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(lambda _: r.render(Ks, [Mesh(v + [0, 0, 0.5], f)]), range(4)))
    for o in outs:
        np.testing.assert_array_equal(o.mask, ref.mask)
        np.testing.assert_array_equal(o.depth, ref.depth)
