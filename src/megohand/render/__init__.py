"""Headless rendering: metric depth, shaded RGB and instance masks of meshes (OpenCV pinhole cameras).

``Renderer(width, height, background_depth=2.0).render(K, [Mesh(...)], T_cam_from_world=None)``
-> ``RenderOutput(depth, rgb, mask)``; ``render_batch`` for many frames (many per draw call). Overlays in
:mod:`megohand.render.overlay`, simple solids in :mod:`megohand.render.primitives`.
"""

from megohand.render.rasterizer import Mesh, RenderOutput, Renderer, projection_matrix, vertex_normals

__all__ = ["Mesh", "RenderOutput", "Renderer", "projection_matrix", "vertex_normals"]
