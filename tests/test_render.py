"""Renderer against analytic ray casts (sphere, box), exact pixel-centre rasterisation of projected
triangles (megohand.geometry.camera.project_points), and hand-computed shading."""

import numpy as np
import pytest
import roma
import torch

from megohand.geometry.camera import project_points
from megohand.render import Mesh, Renderer
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


def test_render_batch_and_torch_inputs(renderer):
    vs, fs = uv_sphere(0.05, 16, 32)
    vc, fc = cylinder(0.03, 0.1, 24)
    frames = [
        [Mesh(torch.tensor(vs) + torch.tensor([0.0, 0, 0.4]), torch.tensor(fs), (1, 0, 0))],
        [Mesh(vs + [0.05, 0, 0.5], fs, (0, 1, 0)), Mesh(vc + [-0.05, 0, 0.5], fc, (0, 0, 1))],
        [],
    ]
    Ts = np.repeat(np.eye(4)[None], 3, 0)
    Ts[2, 2, 3] = 1.0
    out = renderer.render_batch(K, frames, Ts)
    assert out.depth.shape == (3, H, W) and out.rgb.shape == (3, H, W, 3) and out.mask.shape == (3, H, W)
    for i, meshes in enumerate(frames):
        one = renderer.render(K, meshes, Ts[i])
        np.testing.assert_array_equal(out.mask[i], one.mask)
        np.testing.assert_array_equal(out.depth[i], one.depth)
        np.testing.assert_array_equal(out.rgb[i], one.rgb)
    assert set(np.unique(out.mask[1])) == {0, 1, 2}
    with pytest.raises(ValueError, match="frames"):
        renderer.render_batch(np.stack([K, K]), frames)


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
