# Sourced by the GPU scripts: `describe_machine PYTHON` prints what a result was measured on (date, GPU, torch).
describe_machine() {
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$1" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
            'available', torch.cuda.is_available())"
}
