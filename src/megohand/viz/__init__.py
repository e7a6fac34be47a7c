"""Looking at episodes: an MP4 of the egocentric frames with the hand mesh overlaid and the depth
beside it (``video``), PNG strips and GIFs for docs (``strip``), and an optional interactive 3D
view of hands, camera and objects over time written as a rerun ``.rrd`` file (``rerun_view``)."""

from megohand.viz.frames import episode_panels
from megohand.viz.strip import save_gif, save_strip
from megohand.viz.video import read_video_frames, write_mp4

__all__ = ["episode_panels", "read_video_frames", "save_gif", "save_strip", "write_mp4"]
