"""F-CAM (Belharbi et al., WACV 2022), multi-label: a light U-Net decoder (``decoder``) trained on a
frozen classifier turns any low-resolution source CAM of the family (CAM, LPCAM, ReCAM, or a user
function) into full-resolution maps. Seeds come from the source maps (``seeds``); the loss is a
partial cross-entropy on them, a window-truncated dense-CRF energy in pure PyTorch (``crf``) and an
absolute-size log-barrier (``losses``); the settings live in ``config`` and the
:class:`~lpcam_plugin.methods.fcam.estimator.FCAM` estimator fits, predicts, saves and loads."""
