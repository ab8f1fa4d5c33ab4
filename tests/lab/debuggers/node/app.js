// The Node.js debuggee of `lab.sh realdebug` (run with --inspect): tick()
// every 200 ms.
let counter = 0;

function tick() {
  counter++;
  return counter;
}

console.log("node debuggee running");
setInterval(tick, 200);
