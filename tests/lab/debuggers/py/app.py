# The Python debuggee of `lab.sh realdebug` (run under debugpy): a loop that
# calls tick() every 200 ms.
import time

counter = 0


def tick():
    global counter
    counter += 1
    return counter


print("python debuggee running", flush=True)
while True:
    tick()
    time.sleep(0.2)
