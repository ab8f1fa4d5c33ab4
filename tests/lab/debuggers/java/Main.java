// The Java debuggee of `lab.sh realdebug`: a loop that calls tick() every
// 200 ms. Compiled with -g, so jdb can `stop in Main.tick` and `print counter`.
public class Main {
    static long counter;

    static long tick() {
        counter++;
        return counter;
    }

    public static void main(String[] args) throws InterruptedException {
        System.out.println("java debuggee running");
        while (true) {
            tick();
            Thread.sleep(200);
        }
    }
}
