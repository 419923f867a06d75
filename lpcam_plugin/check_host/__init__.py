"""``lpcam check-host``: does the plug-in work in this host fork, with this environment?

``lpcam check-host {irn,amn,edam,mctformer} PATH_TO_FORK [--route R] [--python EXE]`` runs, in a
temporary folder, on CPU and with nothing downloaded:

1. a tiny VOC-style dataset from :mod:`lpcam_plugin.benchmark.synthetic` written in the host's
   layout and list formats (:mod:`~lpcam_plugin.check_host.host_data`);
2. a driver in a subprocess (``--python``, default this interpreter) with the fork first on
   ``sys.path`` and the temporary folder as working directory (the hosts read ``voc12/...``
   relative to it). It probes the environment (:mod:`~lpcam_plugin.check_host.environment`),
   builds the host network with random weights (``torch.hub`` / ``model_zoo`` downloads return
   the network's own random state instead, :mod:`~lpcam_plugin.check_host.offline`), runs the
   adapter's documented route end to end and then the host's own next step on the files written
   (:mod:`~lpcam_plugin.check_host.resnet_driver`, :mod:`~lpcam_plugin.check_host.edam_driver`,
   :mod:`~lpcam_plugin.check_host.mctformer_driver`).

It prints a checklist (:mod:`~lpcam_plugin.check_host.checklist`; environment: versions and known
incompatibilities with their fixes, :mod:`~lpcam_plugin.check_host.fixes`; each step ``ok`` /
``FAIL`` with the exception and the line of the fork it came from) and exits 1 when the plug-in
does not work there. The fork itself is never written to. Hosts, routes and the read-outs each
route can write: :mod:`~lpcam_plugin.check_host.routes`; the command line:
:mod:`lpcam_plugin.cli.check_host`; the host notes: ``docs/design/hosts.md``.
"""
from lpcam_plugin.check_host.checklist import Item, format_checklist
from lpcam_plugin.check_host.fixes import KNOWN_FIXES, known_fix
from lpcam_plugin.check_host.host_data import IMAGE_SIZE, NUM_FIT, NUM_IMAGES, VOC_CLASSES, write_dataset
from lpcam_plugin.check_host.routes import ROUTES
from lpcam_plugin.check_host.runner import check_host, package_root

__all__ = ["IMAGE_SIZE", "Item", "KNOWN_FIXES", "NUM_FIT", "NUM_IMAGES", "ROUTES", "VOC_CLASSES", "check_host",
           "format_checklist", "known_fix", "package_root", "write_dataset"]
